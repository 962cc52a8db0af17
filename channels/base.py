"""The channel interface: one ABC with an explicit, idempotent lifecycle and optional hooks.

A channel is started inside the daemon's task group and stopped on shutdown. ``start`` may fail part
way; ``stop`` must then still release whatever was acquired. Capabilities that not every channel has
(streaming edits, a typing indicator) are hooks with harmless defaults.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from agent.core import Agent
    from config import Settings


class ChannelStartError(Exception):
    """A channel could not start (bad token, port in use); the message is one clear, secret-free line."""


class Channel(ABC):
    #: the name in the config (``[web]``, ``[telegram]``) and on every stored message
    name: ClassVar[str]

    def __init__(self, settings: Settings, agent: Agent) -> None:
        self.settings = settings
        self.agent = agent

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """Whether the config turns this channel on."""
        return False

    @abstractmethod
    async def start(self) -> None:
        """Acquire resources and begin serving; return once serving (run work in background tasks)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop accepting work, finish or cancel running turns, release everything. Idempotent and
        safe after a partial ``start``."""

    async def send_typing(self, target: str) -> None:
        """Optional hook: show that the agent is working."""
        return None
