"""Conformance: audit and usage entries (append, list with paging, aggregates), stats, per-scope state,
leases (``claim``/``release``, ``leases.claim_once``, ``leases.conversation_lock``)."""

from __future__ import annotations

import anyio
import pytest

from store.api.store import Store, TimeRange
from store.engine import Engine
from store.errors import Conflict, InvalidInput
from store.models import AuditEntry, Kind, UsageEntry
from tests.store.conftest import ALICE, ALICE_ELSEWHERE, BOB
from tests.store.helpers import conversation_with
from tests.waiting import until

pytestmark = pytest.mark.anyio


async def test_audit_append_list_and_summary(store: Store) -> None:
    conv = await store.conversations.create(ALICE)
    for i in range(5):
        await store.records.append_audit(
            ALICE,
            AuditEntry(
                tool="http_fetch" if i % 2 else "get_time",
                arguments="{}",
                ok=i != 3,
                error="" if i != 3 else "timeout",
                duration_ms=10.0 * (i + 1),
                conversation_id=conv.sid if i < 2 else "",
                channel="cli",
            ),
        )
    await store.records.append_audit(BOB, AuditEntry(tool="get_time"))
    page = await store.records.list_audit(ALICE, limit=3)
    rest = await store.records.list_audit(ALICE, limit=3, cursor=page.next_cursor)
    everything = page.items + rest.items
    assert len(everything) == 5 and len({e.sid for e in everything}) == 5
    assert [e.created_at for e in everything] == sorted((e.created_at for e in everything), reverse=True)
    assert {e.sid for e in (await store.records.list_audit(ALICE, conversation_id=conv.sid)).items} == {
        e.sid for e in everything if e.conversation_id == conv.sid
    }
    summary = {a.key: a for a in await store.records.audit_summary(ALICE)}
    assert summary["get_time"].count == 3 and summary["get_time"].errors == 0
    assert summary["http_fetch"].count == 2 and summary["http_fetch"].errors == 1
    assert summary["http_fetch"].total_ms == pytest.approx(20.0 + 40.0)
    by_day = await store.records.audit_summary(ALICE, by="day")
    assert len(by_day) == 1 and by_day[0].count == 5
    with pytest.raises(InvalidInput):
        await store.records.audit_summary(ALICE, by="week")


async def test_usage_summary_and_stats(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 3)
    await store.conversations.create(ALICE, "archived soon")
    archived = await store.conversations.create(ALICE, "old")
    await store.conversations.archive(ALICE, archived.sid)
    await store.memories.add(ALICE, "a fact")
    await store.records.append_audit(ALICE, AuditEntry(tool="t"))
    for model, p, c in [("big", 100, 10), ("small", 5, 1), ("big", 50, 5)]:
        await store.records.append_usage(
            ALICE,
            UsageEntry(
                provider="openai",
                model=model,
                prompt_tokens=p,
                completion_tokens=c,
                latency_ms=12.5,
                conversation_id=conv.sid,
            ),
        )
    await store.records.append_usage(BOB, UsageEntry(model="big", prompt_tokens=1000))
    summary = await store.records.usage_summary(ALICE)
    assert [(a.key, a.count, a.prompt_tokens, a.completion_tokens) for a in summary] == [
        ("big", 2, 150, 15),
        ("small", 1, 5, 1),
    ]
    assert (await store.records.usage_summary(ALICE, by="day"))[0].count == 3
    listed = await store.records.list_usage(ALICE, limit=2)
    assert len(listed.items) == 2 and listed.next_cursor is not None
    stats = await store.records.stats(ALICE)
    assert (stats.conversations, stats.archived_conversations, stats.messages) == (2, 1, 3)
    assert (stats.memories, stats.tool_calls, stats.llm_calls) == (1, 1, 3)
    assert (stats.prompt_tokens, stats.completion_tokens) == (155, 16)
    empty = await store.records.stats(ALICE_ELSEWHERE)
    assert empty.llm_calls == 0 and empty.conversations == 0


async def test_state_is_per_scope(store: Store) -> None:
    assert await store.state.get(ALICE, "active") is None
    await store.state.set(ALICE, "active", "0001")
    await store.state.set(ALICE, "active", "0002")
    await store.state.set(BOB, "active", "zzzz")
    assert await store.state.get(ALICE, "active") == "0002"
    assert await store.state.get(BOB, "active") == "zzzz"
    assert await store.state.get(ALICE_ELSEWHERE, "active") is None
    await store.state.delete(ALICE, "active")
    assert await store.state.get(ALICE, "active") is None
    assert await store.state.get(BOB, "active") == "zzzz"


async def test_claim_once(store: Store) -> None:
    assert await store.leases.claim_once(ALICE, "tg-update:1")
    assert not await store.leases.claim_once(ALICE, "tg-update:1")
    assert await store.leases.claim_once(ALICE, "tg-update:2")
    assert await store.leases.claim_once(BOB, "tg-update:1")
    other = Store(store.engine)
    assert not await other.leases.claim_once(ALICE, "tg-update:1")


async def test_leases(engine: Engine) -> None:
    assert await engine.claim(ALICE, "turn:1", "a", 60_000)
    assert await engine.claim(ALICE, "turn:1", "a", 60_000)  # renewal by the holder
    assert not await engine.claim(ALICE, "turn:1", "b", 60_000)
    assert await engine.claim(BOB, "turn:1", "b", 60_000)  # other scope, other lease
    await engine.release(ALICE, "turn:1", "b")  # not the holder: nothing happens
    assert not await engine.claim(ALICE, "turn:1", "b", 60_000)
    await engine.release(ALICE, "turn:1", "a")
    assert await engine.claim(ALICE, "turn:1", "b", 60_000)


async def test_lease_expires(engine: Engine) -> None:
    assert await engine.claim(ALICE, "turn:x", "crashed", 1)
    await until(
        lambda: engine.claim(ALICE, "turn:x", "survivor", 60_000),
        timeout=5,
        interval=0.002,
        what="the lapsed lease to be taken",
    )
    assert not await engine.claim(ALICE, "turn:x", "crashed", 60_000)


async def test_conversation_lock_serialises_turns(store: Store) -> None:
    conv = await store.conversations.create(ALICE)
    events: list[str] = []
    inside = anyio.Event()

    async def turn(name: str, first: bool) -> None:
        if not first:
            await inside.wait()
        async with store.leases.conversation_lock(ALICE, conv.sid):
            events.append(f"{name} in")
            if first:
                inside.set()
                for _ in range(20):  # give the other task every chance to barge in
                    await anyio.sleep(0)
            events.append(f"{name} out")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(turn, "a", True)
            tg.start_soon(turn, "b", False)
    assert events == ["a in", "a out", "b in", "b out"]


async def test_conversation_lock_across_stores(store: Store) -> None:
    """Two Store objects stand for two processes: only the lease keeps them apart."""
    conv = await store.conversations.create(ALICE)
    other = Store(store.engine)
    async with store.leases.conversation_lock(ALICE, conv.sid):
        with pytest.raises(Conflict):
            async with other.leases.conversation_lock(ALICE, conv.sid, wait_s=0.05):
                pytest.fail("entered a held conversation")
        async with other.leases.conversation_lock(BOB, conv.sid, wait_s=0.05):
            pass  # another scope's lock is independent
    with anyio.fail_after(5):
        async with other.leases.conversation_lock(ALICE, conv.sid, wait_s=1):
            pass


DAY_MS = 86_400_000
#: 2024-03-01T00:00:00Z
MARCH_1 = 1_709_251_200_000


async def test_usage_by_day_and_model_in_a_period(sid_store: Store) -> None:
    """Entries restored with their own times (as an import would) land on their UTC days."""
    store = sid_store
    rows = [
        ("u1", MARCH_1 + 10, "big", 100, 10, 200.0, True),
        ("u2", MARCH_1 + DAY_MS - 1, "big", 50, 5, 100.0, False),  # 23:59:59.999 UTC: still March 1
        ("u3", MARCH_1 + 5, "small", 7, 1, 30.0, True),
        ("u4", MARCH_1 + DAY_MS, "big", 1, 1, 10.0, True),  # March 2
        ("u5", MARCH_1 + 3 * DAY_MS, "small", 2, 2, 20.0, True),  # March 4
    ]
    for sid, at, model, p, c, ms, ok in rows:
        entry = UsageEntry(model=model, prompt_tokens=p, completion_tokens=c, latency_ms=ms, ok=ok)
        record = {**entry.to_record(), "sid": sid, "context": ALICE.context, "user_id": ALICE.user_id}
        await store.engine.restore(Kind.USAGE, {**record, "created_at": at, "updated_at": at})
    await store.records.append_usage(BOB, UsageEntry(model="big", prompt_tokens=1000))

    rows_all = await store.records.usage_summary(ALICE, by="day_model")
    assert [(a.day, a.model, a.count, a.prompt_tokens, a.errors, a.total_ms) for a in rows_all] == [
        ("2024-03-01", "big", 2, 150, 1, 300.0),
        ("2024-03-01", "small", 1, 7, 0, 30.0),
        ("2024-03-02", "big", 1, 1, 0, 10.0),
        ("2024-03-04", "small", 1, 2, 0, 20.0),
    ]
    march_2_3 = TimeRange(since=MARCH_1 + DAY_MS, until=MARCH_1 + 3 * DAY_MS)
    assert [a.key for a in await store.records.usage_summary(ALICE, by="day_model", period=march_2_3)] == [
        "2024-03-02 big"
    ]
    since_2 = TimeRange(since=MARCH_1 + DAY_MS)
    by_model = await store.records.usage_summary(ALICE, by="model", period=since_2)
    assert [(a.key, a.count) for a in by_model] == [("big", 1), ("small", 1)]
    listed = await store.records.list_usage(ALICE, period=TimeRange(until=MARCH_1 + DAY_MS))
    assert sorted(u.sid for u in listed.items) == ["u1", "u2", "u3"]
    with pytest.raises(InvalidInput):
        await store.records.usage_summary(ALICE, by="week")
