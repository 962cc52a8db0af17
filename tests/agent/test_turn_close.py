"""The end of a turn is one store batch: the final answer, the turn's usage entries and the release of
its lease (one durable commit on an engine with atomic batches), with the real provider and store."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from agent.core import Agent
from agent.events import Done
from agent.providers.openai import OpenAIProvider
from config.settings import MemorySettings
from store import DelegatingEngine, EmbeddedEngine, Engine, Kind, Results, Scope, Step, Store
from tests.agent.conftest import SCOPE, make_settings, req
from tests.fakes.openai_server import FakeOpenAI, reply_error, reply_hang

pytestmark = pytest.mark.anyio


def _name(step: Step) -> str:
    kind = getattr(step, "kind", None)
    name = type(step).__name__
    return f"create {kind.value}" if name == "CreateStep" and isinstance(kind, Kind) else name


@asynccontextmanager
async def agent_on(engine: Engine, data: Path, fake: FakeOpenAI) -> AsyncIterator[tuple[Store, Agent]]:
    """A real Agent on ``engine`` (over the data dir ``data``) and the fake LLM, memory extraction off:
    its background reads and writes would interleave with the turn's."""
    settings = dataclasses.replace(make_settings(data, fake.base_url), memory=MemorySettings(enabled=False))
    provider = OpenAIProvider(settings.llm)
    try:
        async with Store(engine) as store, Agent(settings, store, provider) as agent:
            yield store, agent
    finally:
        await provider.aclose()


class RecordingEngine(DelegatingEngine):
    """The real embedded engine; each batch's step names are recorded."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self.batches: list[list[str]] = []

    async def batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        self.batches.append([_name(s) for s in steps])
        return await self.inner.batch(scope, steps)


async def test_a_turn_ends_with_one_batch_of_answer_usage_and_release(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        recording = RecordingEngine(EmbeddedEngine(tmp_path / "data"))
        async with agent_on(recording, tmp_path / "data", fake) as (store, agent):
            conv = await agent.conversations.new(SCOPE, channel="cli")
            await store.conversations.rename(SCOPE, conv.sid, "named")  # no title write in the turn
            recording.batches.clear()
            with anyio.fail_after(20):
                events = [ev async for ev in agent.handle(req("hello", conversation_id=conv.sid))]
            assert isinstance(events[-1], Done)
            # the opening (lease, user message, reads) and the closing: nothing in between, nothing after
            opening, closing = recording.batches
            message, usage_entry = f"create {Kind.MESSAGE.value}", f"create {Kind.USAGE.value}"
            assert opening[0] == "ClaimStep" and message in opening
            assert closing == [message, usage_entry, "ReleaseStep"]
            assert "ReleaseStep" not in opening
            [usage] = (await store.records.list_usage(SCOPE)).items
            assert usage.conversation_id == conv.sid
            history = await store.messages.history(SCOPE, conv.sid)
            assert [m.content for m in history] == ["hello", "echo: hello"]


async def test_a_new_conversation_is_named_in_the_closing_batch(tmp_path: Path) -> None:
    """The auto-title costs no durable write of its own: a turn of a new conversation commits twice
    (its opening and its closing), and the title is there once it has ended."""
    async with FakeOpenAI() as fake:
        embedded = EmbeddedEngine(tmp_path / "data")
        recording = RecordingEngine(embedded)
        async with agent_on(recording, tmp_path / "data", fake) as (store, agent):
            conv = await agent.conversations.new(SCOPE, channel="cli")
            assert not conv.title
            recording.batches.clear()
            stats = embedded.commit_stats()
            assert stats is not None
            before = stats.commits
            with anyio.fail_after(20):
                events = [
                    ev async for ev in agent.handle(req("Trip to Lisbon\nand more", conversation_id=conv.sid))
                ]
            assert isinstance(events[-1], Done)
            opening, closing = recording.batches
            assert "UpdateStep" not in opening
            assert closing == [
                f"create {Kind.MESSAGE.value}",
                f"create {Kind.USAGE.value}",
                "UpdateStep",
                "ReleaseStep",
            ]
            assert stats.commits - before == 2
            assert (await store.conversations.get(SCOPE, conv.sid)).title == "Trip to Lisbon"
            # a titled conversation keeps its title: the next turn's closing writes none
            recording.batches.clear()
            with anyio.fail_after(20):
                [ev async for ev in agent.handle(req("something else", conversation_id=conv.sid))]
            assert all("UpdateStep" not in batch for batch in recording.batches)
            assert (await store.conversations.get(SCOPE, conv.sid)).title == "Trip to Lisbon"


async def test_a_failed_first_turn_still_names_its_conversation(tmp_path: Path) -> None:
    """The title is written when the lease is released however the turn ended (here the provider
    refuses the request), as it was when the turn named the conversation on its way in."""
    async with FakeOpenAI() as fake:
        fake.enqueue(reply_error(400))
        async with agent_on(EmbeddedEngine(tmp_path / "data"), tmp_path / "data", fake) as (store, agent):
            conv = await agent.conversations.new(SCOPE, channel="cli")
            with anyio.fail_after(20):
                events = [ev async for ev in agent.handle(req("Broken start", conversation_id=conv.sid))]
            assert not isinstance(events[-1], Done)
            assert (await store.conversations.get(SCOPE, conv.sid)).title == "Broken start"


async def test_a_rename_during_the_first_turn_is_kept(tmp_path: Path) -> None:
    """The auto-title is written when the first turn closes; a rename made while that turn runs (here
    while the model has not answered) cancels it: the user's title stays."""
    async with FakeOpenAI() as fake:
        fake.enqueue(reply_hang())
        async with agent_on(EmbeddedEngine(tmp_path / "data"), tmp_path / "data", fake) as (store, agent):
            conv = await agent.conversations.new(SCOPE, channel="cli")
            events: list[object] = []

            async def first_turn() -> None:
                async for ev in agent.handle(req("Trip to Lisbon", conversation_id=conv.sid)):
                    events.append(ev)

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(first_turn)
                    await fake.wait_for_requests(1)  # the turn is open, its auto-title pending
                    await store.conversations.rename(SCOPE, conv.sid, "Mine")
                    # the consumer leaves: the turn is cancelled, and run_turn waits for it to close
                    # (its lease released, in the batch that would have written the auto-title)
                    tg.cancel_scope.cancel()
            assert (await store.conversations.get(SCOPE, conv.sid)).title == "Mine"
            history = await store.messages.history(SCOPE, conv.sid)
            assert history[0].content == "Trip to Lisbon"  # the turn did run
