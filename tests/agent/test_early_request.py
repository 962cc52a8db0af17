"""A turn's early request (``agent/turn/early.py``) through a real Agent, the real embedded store
(each writer) and the fake LLM over HTTP.

The store's writer is made busy for real: another connection to the database file holds SQLite's
write lock (as another process's transaction does), and a write of the agent waits behind it on the
writer. A turn started then would queue its opening behind that write: it sends its request at once,
and nothing of the reply goes out, and nothing is written, before the opening has answered and
confirmed what the request was built on.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.core import Agent
from agent.events import Done, TextDelta, TurnEvent, TurnFailed, TurnStarted
from agent.turn.early import EARLY_STATS
from config.settings import Settings
from store import EmbeddedEngine, Message, Role, Store, open_store
from tests.agent.conftest import SCOPE, all_messages, main_requests, make_settings, req, running, turn
from tests.fakes.openai_server import FakeOpenAI, reply_text
from tests.fakes.sse_scripts import Reply
from tests.store.helpers import next_ms
from tests.waiting import until

pytestmark = pytest.mark.anyio


def _users(body: dict[str, Any]) -> list[str]:
    return [str(m["content"]) for m in body["messages"] if m["role"] == "user"]


def _answer(body: dict[str, Any]) -> Reply | None:
    """Names what the request held: which reply came from which request is then visible."""
    users = _users(body)
    return reply_text(f"{users[-1]}: {len(users)} user messages seen")


@pytest.fixture(params=["thread", "process"])
def settings(request: pytest.FixtureRequest, fake: FakeOpenAI, tmp_path: Path) -> Settings:
    fake.responder = _answer
    base = make_settings(tmp_path / "data", fake.base_url)
    return dataclasses.replace(base, store=dataclasses.replace(base.store, writer=request.param))


def _engine(agent: Agent) -> EmbeddedEngine:
    engine = agent.store.engine
    assert isinstance(engine, EmbeddedEngine)
    return engine


@contextmanager
def write_locked(db: Path) -> Iterator[sqlite3.Connection]:
    """SQLite's write lock held by a connection of the test's own (another process's transaction,
    as the writer sees it) until the block ends or the test rolls it back."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=5)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


class Collected:
    """A turn's events as they come, from a task of its own."""

    def __init__(self) -> None:
        self.events: list[TurnEvent] = []
        self.ended = anyio.Event()

    async def run(self, agent: Agent, text: str, cid: str, key: str | None = None) -> None:
        try:
            async for ev in agent.handle(req(text, conversation_id=cid, request_key=key)):
                self.events.append(ev)
        finally:
            self.ended.set()

    def shown(self) -> list[TurnEvent]:
        """What a client would have seen of the turn: its acknowledgement and text."""
        return [e for e in self.events if isinstance(e, (TurnStarted, TextDelta, Done))]


async def _busy_writer(agent: Agent, tg: anyio.abc.TaskGroup) -> None:
    """Queue a write of the agent behind the held lock, and wait until the writer has it."""
    tg.start_soon(agent.store.state.set, SCOPE, "early-test", "behind the lock")
    await until(lambda: _engine(agent).backlog() >= 1, what="a write waiting on the writer")


async def _behind_a_busy_writer(
    agent: Agent,
    fake: FakeOpenAI,
    text: str,
    cid: str,
    held: Callable[[Collected], Awaitable[None]] | None = None,
    key: str | None = None,
) -> Collected:
    """A turn started while a write of the agent waits on the writer behind the held lock: once its
    request has reached the model (the lock still held), ``held`` runs with its events so far; then
    the lock goes and the turn ends. Its events."""
    before = len(main_requests(fake))
    seen = Collected()
    with write_locked(_engine(agent).db_path) as lock:
        async with anyio.create_task_group() as tg:
            await _busy_writer(agent, tg)
            tg.start_soon(seen.run, agent, text, cid, key)
            # the request reaches the model while the opening waits behind the lock
            await until(lambda: len(main_requests(fake)) > before, what="the early request")
            if held is not None:
                await held(seen)
            lock.execute("ROLLBACK")
            await seen.ended.wait()
    return seen


async def _first_turn(agent: Agent) -> str:
    """A conversation this process knows (its window cache holds it) after one ordinary turn."""
    done = (await turn(agent, "hello"))[-1]
    assert isinstance(done, Done), done
    return done.conversation_id


async def test_a_turn_behind_a_busy_writer_sends_its_request_before_its_opening_and_shows_it_after(
    settings: Settings, fake: FakeOpenAI
) -> None:
    async with running(settings) as agent:
        cid = await _first_turn(agent)
        before = len(main_requests(fake))
        sent, confirmed = EARLY_STATS.sent, EARLY_STATS.confirmed

        async def held(seen: Collected) -> None:
            assert EARLY_STATS.sent == sent + 1
            # its answer came back too, and waits: no acknowledgement, no text, nothing stored
            await until(lambda: any(e["user"] == "second" for e in fake.exchanges), what="the fake's answer")
            assert seen.shown() == []

        seen = await _behind_a_busy_writer(agent, fake, "second", cid, held)
        early = main_requests(fake)[before]
        assert _users(early) == ["hello", "second"]
        assert len(main_requests(fake)) == before + 1  # the early request was the turn's request
        assert isinstance(seen.events[0], TurnStarted)
        assert (
            "".join(e.text for e in seen.events if isinstance(e, TextDelta)) == "second: 2 user messages seen"
        )
        done = seen.events[-1]
        assert isinstance(done, Done) and done.text == "second: 2 user messages seen"
        assert EARLY_STATS.confirmed == confirmed + 1
        stored = await all_messages(agent.store, cid)
        assert [(m.role, m.content) for m in stored][-2:] == [
            ("user", "second"),
            ("assistant", "second: 2 user messages seen"),
        ]
        assert stored[-2].sid == seen.events[0].user_message_id
        # the next turn extends what the early request built on
        third = await turn(agent, "third", conversation_id=cid)
        assert isinstance(third[-1], Done) and third[-1].text == "third: 3 user messages seen"
        metrics = "\n".join(agent.metrics.render_lines())
        assert f'hero_turn_early_requests_total{{outcome="confirmed"}} {EARLY_STATS.confirmed}' in metrics
        assert f'hero_turn_early_requests_total{{outcome="sent"}} {EARLY_STATS.sent}' in metrics


async def test_an_early_request_built_on_a_window_another_process_changed_is_discarded(
    settings: Settings, fake: FakeOpenAI
) -> None:
    async with running(settings) as agent:
        cid = await _first_turn(agent)
        # another process (its own store) adds to the conversation: this agent's cache does not know
        async with open_store(settings) as other:
            await _append_elsewhere(other, cid)
        before = len(main_requests(fake))
        changed = EARLY_STATS.discarded["changed"]
        seen = await _behind_a_busy_writer(agent, fake, "second", cid)
        early, rebuilt = main_requests(fake)[before:]
        assert _users(early) == ["hello", "second"]  # the cached window, without the new message
        assert _users(rebuilt) == ["hello", "written elsewhere", "second"]
        assert EARLY_STATS.discarded["changed"] == changed + 1
        text = "".join(e.text for e in seen.events if isinstance(e, TextDelta))
        assert text == "second: 3 user messages seen"  # nothing of the discarded request was shown
        stored = await all_messages(agent.store, cid)
        assert [m.content for m in stored if m.role == Role.ASSISTANT][-1] == "second: 3 user messages seen"


async def test_a_request_keyed_turn_waits_for_its_opening_and_a_repeat_calls_no_model(
    settings: Settings, fake: FakeOpenAI
) -> None:
    """A request key may be a repeated delivery (a Telegram update, a client's retry), which gets its
    earlier answer without a model call: only the opening tells, so none goes out before it."""
    async with running(settings) as agent:
        cid = await _first_turn(agent)
        first = (await _waiting_for_its_opening(agent, fake, "keyed", cid, key="tg-update:7")).events[-1]
        assert isinstance(first, Done) and first.text == "keyed: 2 user messages seen"
        stored = [m.sid for m in await all_messages(agent.store, cid)]
        before = len(main_requests(fake))
        again = await _waiting_for_its_opening(agent, fake, "keyed", cid, key="tg-update:7")
        done = again.events[-1]
        assert isinstance(done, Done) and done.message_id == first.message_id
        assert [e.text for e in again.events if isinstance(e, TextDelta)] == ["keyed: 2 user messages seen"]
        assert len(main_requests(fake)) == before  # the earlier answer, no model call
        assert [m.sid for m in await all_messages(agent.store, cid)] == stored  # nothing new stored


@pytest.mark.parametrize("turns", [1, 2, 4])
async def test_the_early_request_holds_the_window_the_opening_reads(
    settings: Settings, fake: FakeOpenAI, turns: int
) -> None:
    """A window of 6 messages: not full (2 and 4 messages before the turn), and full (8 stored)."""
    small = dataclasses.replace(settings, agent=dataclasses.replace(settings.agent, history_limit=6))
    async with running(small) as agent:
        cid = await _first_turn(agent)
        for i in range(1, turns):
            assert isinstance((await turn(agent, f"turn {i}", conversation_id=cid))[-1], Done)
        before, confirmed = len(main_requests(fake)), EARLY_STATS.confirmed
        seen = await _behind_a_busy_writer(agent, fake, "now", cid)
        assert isinstance(seen.events[-1], Done)
        assert EARLY_STATS.confirmed == confirmed + 1  # the opening read the whole window: <= 32
        [early] = main_requests(fake)[before:]
        said = ["hello", *(f"turn {i}" for i in range(1, turns)), "now"]
        # the newest 6 messages: the last 3 user messages with the answers between
        assert _users(early) == said[-3:]
        assert seen.events[-1].text == f"now: {len(said[-3:])} user messages seen"


async def test_memories_known_from_an_earlier_turn_are_recalled_without_a_read_and_confirmed(
    settings: Settings, fake: FakeOpenAI
) -> None:
    """A user with fewer memories than a turn reads of the newest: the last opening read them all,
    and the early request recalls from those; the opening's own recall confirms them."""
    async with running(settings) as agent:
        await agent.store.memories.add(SCOPE, "Alice likes green tea")
        await agent.store.memories.add(SCOPE, "Alice plays the cello")
        cid = await _first_turn(agent)
        assert agent.memory.known(SCOPE, "which tea?") is not None  # all of them, from that turn
        before, confirmed = len(main_requests(fake)), EARLY_STATS.confirmed
        seen = await _behind_a_busy_writer(agent, fake, "which tea?", cid)
        assert isinstance(seen.events[-1], Done)
        assert EARLY_STATS.confirmed == confirmed + 1
        [early] = main_requests(fake)[before:]
        system = fake.system_text(early)
        assert "Alice likes green tea" in system and "Alice plays the cello" in system


async def test_a_memory_added_elsewhere_discards_an_early_request_built_on_the_known_ones(
    settings: Settings, fake: FakeOpenAI
) -> None:
    async with running(settings) as agent:
        await agent.store.memories.add(SCOPE, "Alice plays the cello")
        cid = await _first_turn(agent)
        async with open_store(settings) as other:  # another process: this one's guess is stale
            await other.memories.add(SCOPE, "Alice likes green tea")
        before, changed = len(main_requests(fake)), EARLY_STATS.discarded["changed"]
        seen = await _behind_a_busy_writer(agent, fake, "which tea?", cid)
        assert isinstance(seen.events[-1], Done)
        early, rebuilt = main_requests(fake)[before:]
        assert "green tea" not in fake.system_text(early)
        assert "Alice likes green tea" in fake.system_text(rebuilt)
        assert EARLY_STATS.discarded["changed"] == changed + 1


async def test_a_user_with_many_memories_has_them_read_beside_the_busy_writer(
    settings: Settings, fake: FakeOpenAI
) -> None:
    """More memories than a turn reads of the newest: not all known, so the early request reads
    them on the reads' own connection, which answers while the writer waits for the lock."""
    async with running(settings) as agent:
        facts = ["likes green tea", "plays the cello", "lives in Ghent", "runs", "reads", "sings", "cooks"]
        for fact in facts:  # the tea the oldest: not among the newest 5, found by its words only
            await agent.store.memories.add(SCOPE, f"Alice {fact}")
            await next_ms()
        cid = await _first_turn(agent)
        assert agent.memory.known(SCOPE, "which tea?") is None  # more than the newest 5
        before, confirmed = len(main_requests(fake)), EARLY_STATS.confirmed
        seen = await _behind_a_busy_writer(agent, fake, "which tea?", cid)
        assert isinstance(seen.events[-1], Done)
        assert EARLY_STATS.confirmed == confirmed + 1
        [early] = main_requests(fake)[before:]
        assert "Alice likes green tea" in fake.system_text(early)  # the words' match, read beside


async def _append_elsewhere(store: Store, cid: str) -> None:
    await store.messages.append(
        SCOPE, Message(conversation_id=cid, role=Role.USER.value, content="written elsewhere", channel="web")
    )


async def test_when_the_opening_fails_nothing_of_the_early_request_is_shown_or_stored(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.responder = _answer
    base = make_settings(tmp_path / "data", fake.base_url)
    # the writer gives up on the held lock soon: the turn's opening fails (the store is "down")
    settings = dataclasses.replace(base, store=dataclasses.replace(base.store, busy_timeout_s=0.3))
    async with running(settings) as agent:
        cid = await _first_turn(agent)
        before = len(main_requests(fake))
        failed = EARLY_STATS.discarded["failed"]
        seen = Collected()
        with write_locked(_engine(agent).db_path):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_ignoring_failure, agent.store.state.set(SCOPE, "early-test", "x"))
                await until(lambda: _engine(agent).backlog() >= 1, what="a write waiting on the writer")
                tg.start_soon(seen.run, agent, "second", cid)
                with anyio.fail_after(20):
                    await seen.ended.wait()
        assert len(main_requests(fake)) == before + 1  # the early request was sent
        assert isinstance(seen.events[-1], TurnFailed), seen.events
        assert seen.shown() == []
        assert EARLY_STATS.discarded["failed"] == failed + 1
        assert [m.content for m in await all_messages(agent.store, cid)] == [
            "hello",
            "hello: 1 user messages seen",
        ]


async def _ignoring_failure(write: Any) -> None:
    """The test's blocker write, which fails with the store's busy timeout like the opening."""
    try:
        await write
    except Exception as exc:  # the store's error for a write that met the held lock
        assert "locked" in str(exc) or "busy" in str(exc), exc


async def test_with_early_request_off_a_turn_waits_for_its_opening(
    settings: Settings, fake: FakeOpenAI
) -> None:
    off = dataclasses.replace(settings, agent=dataclasses.replace(settings.agent, early_request=False))
    async with running(off) as agent:
        cid = await _first_turn(agent)
        seen = await _waiting_for_its_opening(agent, fake, "second", cid)
        assert isinstance(seen.events[-1], Done) and seen.events[-1].text == "second: 2 user messages seen"


async def _waiting_for_its_opening(
    agent: Agent, fake: FakeOpenAI, text: str, cid: str, key: str | None = None
) -> Collected:
    """A turn started behind a busy writer that must not go early: once its opening is queued (an
    early request would have been sent by then), nothing was sent; then the lock goes."""
    before, sent = len(main_requests(fake)), EARLY_STATS.sent
    seen = Collected()
    with write_locked(_engine(agent).db_path) as lock:
        async with anyio.create_task_group() as tg:
            await _busy_writer(agent, tg)
            tg.start_soon(seen.run, agent, text, cid, key)
            await until(lambda: _engine(agent).backlog() >= 2, what="the turn's opening queued")
            assert EARLY_STATS.sent == sent
            assert len(main_requests(fake)) == before
            lock.execute("ROLLBACK")
            await seen.ended.wait()
    return seen
