"""The channels' errors (under :class:`config.errors.HeroError`: each carries its ``code``; channels
render every layer's errors from that description, see ``describe_error`` and ``TurnFailed.of``).

::

    ChannelError          channel_error          (user-safe) a channel cannot serve; the daemon exits 1
    +-- ChannelStartError channel_start_failed   a channel could not start (bad token, port in use)
    +-- ChannelCrashed    channel_crashed        a started channel stopped serving on its own
    ApiError              (per answer)           (user-safe) one web request refused: ``status``,
                                                 ``code``, ``message`` (channels/web/errors.py)

How each channel renders an error of any layer: the web answers ``{"error": {"code", "message"}}``
with the status its code maps to (``channels/web/errors.py``), or an SSE ``error`` event from the
turn's ``TurnFailed``; Telegram and the terminal show ``user_message``; the command line prints one
line, ``hero-agent: error: <message>`` (exit 1; a ``ConfigError`` exits 2).

Not in the tree, because they never leave their channel: Telegram's ``DeliveryFailed`` (a reply that
could not be delivered even as a notice: counted and logged) and ``init``'s ``InitFailed`` (one line,
exit 1, printed by the command itself).
"""

from __future__ import annotations

from config.errors import HeroError


class ChannelError(HeroError):
    """A channel cannot serve; the message is one clear, secret-free line (the daemon exits 1)."""

    code = "channel_error"
    user_safe = True


class ChannelStartError(ChannelError):
    """A channel could not start (bad token, port in use)."""

    code = "channel_start_failed"


class ChannelCrashed(ChannelError):
    """A started channel stopped serving on its own (its server died): see :meth:`Channel.serving`."""

    code = "channel_crashed"
