"""The channels' errors."""

from __future__ import annotations


class ChannelError(Exception):
    """A channel cannot serve; the message is one clear, secret-free line (the daemon exits 1)."""


class ChannelStartError(ChannelError):
    """A channel could not start (bad token, port in use)."""


class ChannelCrashed(ChannelError):
    """A started channel stopped serving on its own (its server died): see :meth:`Channel.serving`."""
