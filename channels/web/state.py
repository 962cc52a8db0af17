"""What every route of the web app shares: settings, the agent, metrics and the shutdown signal."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from starlette.requests import Request

from channels.web.metrics import Metrics
from store import KeyedLocks

if TYPE_CHECKING:
    from agent.core import Agent
    from config import Settings


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
