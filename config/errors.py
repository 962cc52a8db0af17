"""The root of every layer's error tree, and the configuration's own error.

Each error describes itself once, on its class (or, for a family like ``MediaError``, on the instance
that says which case it is): channels render errors from this description and never word them again.

::

    HeroError                         the root: ``code``, ``user_safe``, ``retryable``, ``user_message``
    +-- ConfigError                   (user-safe) an invalid configuration file or value
    +-- store.StoreError              the store's tree: store/errors.py
    +-- agent.AgentError              the agent's tree: agent/errors.py
    +-- channels.ChannelError         the channels' tree: channels/errors.py

* ``code``: stable and machine-readable: the web API's ``error.code``, a turn's ``TurnFailed.code``,
  the ``code`` label of the error counters.
* ``user_safe``: the message (``str(error)``) holds no secret and no internals and may be shown as it
  is (to the operator on the command line, to the user in a chat), else only ``sentence`` is shown.
* ``retryable``: the same request may work later.
* ``user_message``: the one sentence a chat user is shown. ``describe_error`` gives it for any exception
  (a bug outside the trees is ``internal``).

Why the root lives in ``config``: every layer may import ``config``, and a channel must render an error of
any layer through one description.
"""

from __future__ import annotations


class HeroError(Exception):
    """An error that describes itself: see the module docstring."""

    code: str = "internal"
    user_safe: bool = False
    retryable: bool = False
    #: what a user is shown when the message itself is not for them
    sentence: str = "Something went wrong on our side."

    @property
    def user_message(self) -> str:
        """The one sentence a user is shown for this error."""
        text = str(self)
        return text if self.user_safe and text else self.sentence


def describe_error(exc: BaseException) -> tuple[str, str]:
    """``(code, user_message)`` of any exception; one outside the error trees is an ``internal`` bug."""
    if isinstance(exc, HeroError):
        return exc.code, exc.user_message
    return HeroError.code, HeroError.sentence


class ConfigError(HeroError):
    """An invalid configuration file or value.

    ``key`` is the dotted key path (``web.port``), ``reason`` says what is wrong. The message never
    contains the offending value of a secret key.
    """

    code = "config_error"
    user_safe = True

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}" if key else reason)
