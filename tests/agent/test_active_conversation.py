"""The active conversation of a turn: read once (by the turn's opening batch), and a deleted one gives
way to a new conversation without storing anything in the old one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from agent.core import Agent
from agent.events import Done
from agent.providers.openai import OpenAIProvider
from store import DelegatingEngine, EmbeddedEngine, Kind, Results, Scope, Step, Store
from tests.agent.conftest import SCOPE, Kit, all_messages, turn

pytestmark = pytest.mark.anyio


class RecordingEngine(DelegatingEngine):
    """A real embedded engine that records every step it is handed (the engine seam)."""

    def __init__(self, path: Path) -> None:
        super().__init__(EmbeddedEngine(path))
        self.steps: list[Step] = []

    async def batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        self.steps += steps
        return await self.inner.batch(scope, steps)

    def conversation_reads(self) -> int:
        return sum(
            1
            for step in self.steps
            if type(step).__name__ == "GetStep" and getattr(step, "kind", None) is Kind.CONVERSATION
        )


async def test_a_turn_reads_its_active_conversation_once(kit: Kit, tmp_path: Path) -> None:
    engine = RecordingEngine(tmp_path / "recorded")
    provider = OpenAIProvider(kit.settings.llm)
    async with Store(engine) as store, Agent(kit.settings, store, provider) as agent:
        first = await turn(agent, "hello")  # makes the conversation and makes it active
        assert isinstance(first[-1], Done)
        engine.steps.clear()
        second = await turn(agent, "and again")
        assert isinstance(second[-1], Done) and second[-1].conversation_id == first[-1].conversation_id
        assert engine.conversation_reads() == 1
    await provider.aclose()


async def test_a_deleted_active_conversation_gives_way_to_a_new_one(agent: Agent) -> None:
    first = await turn(agent, "hello")
    assert isinstance(first[-1], Done)
    old = first[-1].conversation_id
    # deleted behind the agent's back (another process, an import): the state still names it
    await agent.store.conversations.delete(SCOPE, old)
    with anyio.fail_after(20):
        second = await turn(agent, "still there?")
    assert isinstance(second[-1], Done)
    new = second[-1].conversation_id
    assert new != old
    assert [m.content for m in await all_messages(agent.store, new) if m.role == "user"] == ["still there?"]
    active = await agent.conversations.active(SCOPE, channel="cli", create=False)
    assert active is not None and active.sid == new
