"""The agent layer's error hierarchy.

::

    AgentError                          base
    +-- ProviderError                   an LLM call failed (``status``, ``retryable``, ``user_safe``)
    |   +-- ProviderAuthError           401/403, bad key: never retried
    |   +-- ProviderQuotaError          quota or billing exhausted: never retried
    |   +-- ProviderRateLimited         429 (retryable, ``retry_after`` seconds when the server said)
    |   +-- ProviderUnavailable         5xx, 408, 409, timeouts, connection errors, dropped streams
    +-- TurnBusy                        the conversation is running another turn (user-safe)
    +-- ToolError                       a tool failed; becomes an error result the model sees

Messages never contain API keys or tokens, nor the provider's address: they reach end users (a chat,
a web page). ``ProviderError.detail`` carries what only the operator's logs should show.
"""

from __future__ import annotations


class AgentError(Exception):
    user_safe: bool = True
    retryable: bool = False


class ProviderError(AgentError):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        #: for the logs only (e.g. the provider's address): the message is what users see
        self.detail = detail


class ProviderAuthError(ProviderError):
    pass


class ProviderQuotaError(ProviderError):
    pass


class ProviderRateLimited(ProviderError):
    pass


class ProviderUnavailable(ProviderError):
    pass


class TurnBusy(AgentError):
    pass


class ToolError(AgentError):
    pass
