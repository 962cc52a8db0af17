"""A turn's opening answered before its commit is durable (``Engine.batch_early``), through a real
Agent, the real embedded store and the fake LLM over HTTP. The engine below hands the turn its
opening's results at once but holds back the news that the commit is durable until the test lets it
go (as a slow disk would): the request goes out meanwhile, nothing acknowledges the user message
before, and the turn's own writes ahead of its request wait for it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup

from agent.core import Agent
from agent.events import Done, TextDelta, TurnEvent, TurnStarted
from agent.providers.openai import OpenAIProvider
from agent.turn.options import TurnOptions
from config.settings import MemorySettings
from store import DelegatingEngine, Durable, EmbeddedEngine, Engine, Results, Scope, Step, Store
from tests.agent.conftest import SCOPE, make_settings, req
from tests.fakes.openai_server import FakeOpenAI
from tests.waiting import until

pytestmark = pytest.mark.anyio


class HeldDurability(asyncio.Future[None]):
    """An early batch's durability as the turn sees it: settled once the real commit is durable AND
    the test let it go; ``awaited`` once the turn waits on it (it has gone as far as it can)."""

    def __init__(self, real: asyncio.Future[None], release: anyio.Event) -> None:
        super().__init__()
        self.awaited = False
        self._real, self._release = real, release

    async def settle(self) -> None:
        await self._real
        await self._release.wait()
        self.set_result(None)

    def __await__(self) -> Generator[Any, None, None]:
        if not self.done():
            self.awaited = True
        return (yield from super().__await__())


class SlowDisk(DelegatingEngine):
    """The embedded engine; an early batch's durability reaches the caller only after ``let_go``."""

    def __init__(self, inner: Engine, tg: TaskGroup) -> None:
        super().__init__(inner)
        self.let_go = anyio.Event()
        self.held: list[HeldDurability] = []
        #: the batches that came while an early one's durability was held back
        self.behind: list[list[str]] = []
        self._tg = tg

    async def batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        if self.held and not self.let_go.is_set():
            self.behind.append([type(s).__name__ for s in steps])
        return await self.inner.batch(scope, steps)

    async def batch_early(self, scope: Scope, steps: Sequence[Step]) -> tuple[Results, Durable]:
        results, durable = await self.inner.batch_early(scope, steps)
        assert durable is not None  # the embedded engine answers a write batch early
        held = HeldDurability(durable, self.let_go)
        self.held.append(held)
        self._tg.start_soon(held.settle)
        return results, held


async def _agent_run(tmp_path: Path, fake: FakeOpenAI, request_options: TurnOptions) -> list[str]:
    """One turn with its opening's durability held back; returns the roles stored."""
    settings = dataclasses.replace(
        make_settings(tmp_path / "data", fake.base_url), memory=MemorySettings(enabled=False)
    )
    provider = OpenAIProvider(settings.llm)
    events: list[TurnEvent] = []
    try:
        async with anyio.create_task_group() as settling:
            slow = SlowDisk(EmbeddedEngine(tmp_path / "data"), settling)
            async with Store(slow) as store, Agent(settings, store, provider) as agent:
                conv = await agent.conversations.new(SCOPE, channel="cli")

                async def run() -> None:
                    request = req("hello there", conversation_id=conv.sid, options=request_options)
                    async for ev in agent.handle(request):
                        events.append(ev)

                with anyio.fail_after(20):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(run)
                        await until(lambda: slow.held, what="the opening answered early")
                        # the turn went as far as it can without the opening being durable
                        await until(lambda: slow.held[0].awaited, what="the turn waiting for the commit")
                        if request_options.system:
                            # the client's system text is a write of the turn's own ahead of its
                            # request: it waits for the opening's commit, and so does the request
                            assert slow.behind == [] and fake.request_count == 0
                        else:
                            # the request went out while the opening was not yet durable
                            assert fake.request_count == 1
                        assert events == []  # nothing acknowledged the user message meanwhile
                        slow.let_go.set()
                roles = [m.role for m in await store.messages.history(SCOPE, conv.sid)]
    finally:
        await provider.aclose()
    assert isinstance(events[0], TurnStarted)
    assert isinstance(events[-1], Done)
    assert any(isinstance(e, TextDelta) for e in events)
    return roles


async def test_the_request_goes_out_before_the_opening_is_durable_and_turn_started_after(
    tmp_path: Path,
) -> None:
    async with FakeOpenAI() as fake:
        assert await _agent_run(tmp_path, fake, TurnOptions()) == ["user", "assistant"]


async def test_a_turns_own_write_ahead_of_its_request_waits_for_the_opening(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        roles = await _agent_run(tmp_path, fake, TurnOptions(system="answer in French"))
    assert roles == ["user", "system", "assistant"]
