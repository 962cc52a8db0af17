"""What every route of the web app shares: settings, the agent, metrics and the shutdown signal."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from starlette.requests import Request

from channels.web.metrics import Metrics

if TYPE_CHECKING:
    from agent.core import Agent
    from config import Settings


class KeyedLocks:
    """One lock per key, dropped again when nobody holds or waits for it (keys come from requests,
    so a plain dict of locks would grow without bound)."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (anyio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


@dataclass
class WebState:
    """App-owned state, kept on ``app.state.web``.

    ``shutdown`` is set when the channel stops: new turns are refused with 503, open streams give
    their turn ``settings.web.shutdown_deadline_s`` to finish, then cancel it and end with a final
    ``error`` event (code ``shutdown``).
    """

    settings: Settings
    agent: Agent
    metrics: Metrics = field(default_factory=Metrics)
    shutdown: anyio.Event = field(default_factory=anyio.Event)
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    #: signs attachment links (``channels.web.media``); made at start, so links die with the process
    link_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def deadline_s(self) -> float:
        return self.settings.web.shutdown_deadline_s


def web_state(request: Request) -> WebState:
    state = request.app.state.web
    assert isinstance(state, WebState)
    return state
