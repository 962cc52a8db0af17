"""The channel interface: one ABC with an explicit, idempotent lifecycle and optional hooks.

A channel is started inside the daemon's task group and stopped on shutdown. ``start`` may fail part
way; ``stop`` must then still release whatever was acquired. While it runs, the daemon awaits
:meth:`Channel.serving`, which a channel with a server of its own uses to report that server's death.
Capabilities that not every channel has (streaming edits, a typing indicator) are hooks with harmless
defaults.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import anyio

if TYPE_CHECKING:
    from agent.core import Agent
    from config import Settings


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

    async def serving(self) -> None:
        """Optional hook, awaited by the daemon while the channel runs: raise :class:`ChannelCrashed`
        when the channel stops serving on its own (its server task ended, its listening socket was
        closed). Outages of what the channel talks to (the Bot API, the network) are not crashes: the
        channel retries those itself. The default never returns."""
        await anyio.sleep_forever()

    async def send_typing(self, target: str) -> None:
        """Optional hook: show that the agent is working."""
        return None
