"""The agent layer's error hierarchy (under :class:`config.errors.HeroError`: each class carries its
``code`` and the sentence a user is shown; a failed turn's ``TurnFailed`` is made from one of these).

::

    AgentError                      agent_error        base (user-safe)
    +-- ProviderError               provider_error     an LLM call failed (``status``, ``retryable``)
    |   +-- ProviderAuthError                          401/403, bad key: never retried
    |   +-- ProviderQuotaError                         quota or billing exhausted: never retried
    |   +-- ProviderRateLimited                        429 (retryable, ``retry_after`` seconds when said)
    |   +-- ProviderUnavailable                        5xx, 408, 409, timeouts, connection errors, cuts
    |   +-- ProviderModelNotFound                      404 for the model: the next fallback may work
    |                                                  (agent/providers/http.py)
    +-- VisionRefused               vision_unsupported the model refused the turn's images
    +-- TurnStopped                 cancelled          the turn was cancelled (/stop, Ctrl-C, client gone)
    +-- TurnTimedOut                deadline           the turn ran past ``[agent] turn_deadline_s``
    +-- AgentClosing                unavailable        the agent is shutting down (retryable)
    +-- MediaError                  (per case)         bad or unusable image or voice input: ``code`` says
    |                                                  which (agent/media/errors.py)
    +-- PairingError                pairing_<reason>   a pairing request that cannot be done
    |                                                  (agent/pairing.py)
    +-- RerunRefused                conflict           a retry, regenerate or edit that cannot be done
    |                                                  (agent/rerun.py)
    +-- ToolResultsRefused          conflict           client tool results that answer no awaited call

Not in the tree: a tool's ``ToolError`` (agent/tools/base.py) is not raised to anyone: the registry
turns it into an error result the model reads.

Messages never contain API keys or tokens, nor the provider's address: they reach end users (a chat,
a web page). ``ProviderError.detail`` carries what only the operator's logs should show.
"""

from __future__ import annotations

from config.errors import HeroError


class AgentError(HeroError):
    code = "agent_error"
    user_safe = True


class ProviderError(AgentError):
    code = "provider_error"
    sentence = "The model provider failed."

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        detail: str = "",
        failure: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        #: for the logs only (e.g. the provider's address): the message is what users see
        self.detail = detail
        #: a transport failure's kind ("ConnectError", "ReadError"...), "" for an answered request
        self.failure = failure


class ProviderAuthError(ProviderError):
    pass


class ProviderQuotaError(ProviderError):
    pass


class ProviderRateLimited(ProviderError):
    pass


class ProviderUnavailable(ProviderError):
    pass


class VisionRefused(AgentError):
    """Under ``[llm] vision = "auto"`` the model answered images with a client error: the image is
    kept and the model sees placeholders from now on."""

    code = "vision_unsupported"

    def __init__(self, model: str, refusal: ProviderError) -> None:
        super().__init__(
            f"The model {model} did not accept the image ({refusal}). The image is kept; from now on the "
            "model sees it as a placeholder. Use a model that accepts images, or set [llm] vision = false."
        )


class TurnStopped(AgentError):
    """The turn was cancelled: ``/stop``, Ctrl-C, a client that went away, shutdown."""

    code = "cancelled"

    def __init__(self) -> None:
        super().__init__("The turn was stopped.")


class TurnTimedOut(AgentError):
    """The turn ran longer than ``[agent] turn_deadline_s`` and was stopped."""

    code = "deadline"

    def __init__(self, deadline_s: float) -> None:
        super().__init__(f"The turn took longer than {deadline_s:g} s and was stopped.")


class AgentClosing(AgentError):
    """A turn asked for while the agent shuts down."""

    code = "unavailable"
    retryable = True

    def __init__(self) -> None:
        super().__init__("The agent is shutting down; try again shortly.")


class ToolResultsRefused(AgentError):
    """Client tool results sent when no call of theirs awaits results (another request took them
    first, or a wrong id): nothing was stored."""

    code = "conflict"
