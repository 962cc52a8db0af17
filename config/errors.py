"""Configuration errors. Always user-safe: they name a key path and a reason, never a secret value."""

from __future__ import annotations


class ConfigError(Exception):
    """An invalid configuration file or value.

    ``key`` is the dotted key path (``web.port``), ``reason`` says what is wrong. The message never
    contains the offending value of a secret key.
    """

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}" if key else reason)
