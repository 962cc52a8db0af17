"""Conformance of the engine seam itself: filters, ordering and cursors, store-owned fields, contexts,
dump/restore, lifecycle, and a loop that keeps running while the engine works."""

from __future__ import annotations

import anyio
import pytest

from store.engine import Engine, ListQuery
from store.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from store.models import Kind, Record
from tests.store.conftest import ALICE, ALICE_ELSEWHERE, BOB

pytestmark = pytest.mark.anyio


async def _audit(engine: Engine, n: int) -> list[Record]:
    return [
        await engine.create(
            Kind.AUDIT,
            ALICE,
            {
                "tool": f"tool{i % 3}",
                "duration_ms": float(i),
                "ok": i % 2 == 0,
                "conversation_id": "c1" if i < 4 else "",
                "arguments": "{}",
            },
        )
        for i in range(n)
    ]


async def _all(engine: Engine, kind: Kind, query: ListQuery) -> list[Record]:
    out: list[Record] = []
    cursor = None
    while True:
        page = await engine.list(
            kind,
            ALICE,
            ListQuery(
                filters=query.filters,
                order_by=query.order_by,
                descending=query.descending,
                limit=query.limit,
                cursor=cursor,
            ),
        )
        out += page.items
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"duration_ms__gt": 6}, [7, 8, 9]),
        ({"duration_ms__gte": 6}, [6, 7, 8, 9]),
        ({"duration_ms__lt": 2}, [0, 1]),
        ({"duration_ms__lte": 2}, [0, 1, 2]),
        ({"tool": "tool1"}, [1, 4, 7]),
        ({"tool__eq": "tool1"}, [1, 4, 7]),
        ({"tool__ne": "tool1"}, [0, 2, 3, 5, 6, 8, 9]),
        ({"tool__in": ["tool0", "tool2"]}, [0, 2, 3, 5, 6, 8, 9]),
        ({"tool__in": []}, []),
        ({"ok": True}, [0, 2, 4, 6, 8]),
        ({"conversation_id": "c1"}, [0, 1, 2, 3]),
        ({"conversation_id": "c1", "duration_ms__gte": 2}, [2, 3]),
        ({"missing_field": None}, list(range(10))),
    ],
)
async def test_filters(engine: Engine, filters: dict[str, object], expected: list[int]) -> None:
    await _audit(engine, 10)
    got = await _all(engine, Kind.AUDIT, ListQuery(filters=filters, order_by="duration_ms", limit=3))
    assert [int(r["duration_ms"]) for r in got] == expected
    assert await engine.count(Kind.AUDIT, ALICE, filters) == len(expected)


async def test_order_by_any_field_with_cursor(engine: Engine) -> None:
    made = await _audit(engine, 10)
    by_tool = await _all(engine, Kind.AUDIT, ListQuery(order_by="tool", descending=True, limit=4))
    expected = sorted(made, key=lambda r: (r["tool"], r["sid"]), reverse=True)
    assert [r["sid"] for r in by_tool] == [r["sid"] for r in expected]


@pytest.mark.parametrize(
    "query",
    [
        ListQuery(filters={"tool__like": "x"}),
        ListQuery(filters={"bad-name": 1}),
        ListQuery(filters={"x') OR 1=1 --": 1}),
        ListQuery(filters={"tool__in": "tool1"}),
        ListQuery(order_by="data; DROP TABLE audit"),
        ListQuery(limit=0),
        ListQuery(limit=100_000),
        ListQuery(cursor="not a cursor"),
        ListQuery(cursor="W10"),
    ],
)
async def test_bad_queries_are_invalid_input(engine: Engine, query: ListQuery) -> None:
    await _audit(engine, 2)
    with pytest.raises(InvalidInput):
        await engine.list(Kind.AUDIT, ALICE, query)
    assert await engine.count(Kind.AUDIT, ALICE) == 2


async def test_store_owned_fields(engine: Engine) -> None:
    rec = await engine.create(
        Kind.CONVERSATION,
        ALICE,
        {
            "sid": "hack",
            "context": "other",
            "user_id": "bob",
            "created_at": 1,
            "title": "t",
            "is_archived": False,
            "message_count": 0,
        },
    )
    assert rec["sid"] != "hack" and (rec["context"], rec["user_id"]) == ("default", "alice")
    assert rec["created_at"] > 1
    updated = await engine.update(
        Kind.CONVERSATION,
        ALICE,
        rec["sid"],
        {"title": "u", "user_id": "bob", "sid": "x", "created_at": 5, "message_count": 99},
    )
    assert updated is not None
    assert (updated["title"], updated["user_id"], updated["sid"]) == ("u", "alice", rec["sid"])
    assert updated["created_at"] == rec["created_at"] and updated["message_count"] == 0
    assert updated["updated_at"] >= rec["updated_at"]
    assert await engine.update(Kind.CONVERSATION, BOB, rec["sid"], {"title": "x"}) is None
    assert not await engine.delete(Kind.CONVERSATION, ALICE_ELSEWHERE, rec["sid"])
    assert await engine.get(Kind.CONVERSATION, ALICE, rec["sid"]) == updated


async def test_message_create_rules(engine: Engine) -> None:
    conv = await engine.create(Kind.CONVERSATION, ALICE, {"title": "", "is_archived": False})
    msg = await engine.create(
        Kind.MESSAGE, ALICE, {"conversation_id": conv["sid"], "content": "x", "seq": 77}
    )
    assert msg["seq"] == 1
    with pytest.raises(NotFound):
        await engine.create(Kind.MESSAGE, BOB, {"conversation_id": conv["sid"], "content": "x"})
    assert await engine.count(Kind.MESSAGE, BOB) == 0


async def test_contexts_and_dump_order(engine: Engine) -> None:
    assert await engine.contexts() == []
    conv = await engine.create(Kind.CONVERSATION, BOB, {"title": "b", "is_archived": False})
    await engine.create(Kind.MESSAGE, BOB, {"conversation_id": conv["sid"], "content": "hi", "role": "user"})
    await engine.create(Kind.MEMORY, ALICE, {"content": "m", "hash": "h"})
    await engine.create(Kind.CONVERSATION, ALICE, {"title": "a", "is_archived": False})
    await engine.create(Kind.STATE, ALICE_ELSEWHERE, {"key": "k", "value": "v"})
    assert await engine.contexts() == ["default", "other"]
    dumped = [(kind, rec) async for kind, rec in engine.dump("default")]
    kinds = [kind for kind, _ in dumped]
    assert kinds == [Kind.CONVERSATION, Kind.CONVERSATION, Kind.MESSAGE, Kind.MEMORY]
    conv_sids = [rec["sid"] for kind, rec in dumped if kind is Kind.CONVERSATION]
    assert conv_sids == sorted(conv_sids)
    assert {rec["user_id"] for _, rec in dumped} == {"alice", "bob"}
    assert [(k, r["sid"]) async for k, r in engine.dump("default")] == [(k, r["sid"]) for k, r in dumped]


async def test_restore_keeps_sids_and_is_idempotent(engine: Engine) -> None:
    conv = {
        "sid": "00zz",
        "context": "default",
        "user_id": "alice",
        "created_at": 10,
        "updated_at": 20,
        "title": "restored",
        "is_archived": False,
        "message_count": 1,
        "tags": [],
    }
    msg = {
        "sid": "0100",
        "context": "default",
        "user_id": "alice",
        "created_at": 11,
        "updated_at": 11,
        "conversation_id": "00zz",
        "seq": 1,
        "role": "user",
        "content": "old",
        "channel": "cli",
    }
    assert await engine.restore(Kind.CONVERSATION, conv)
    assert await engine.restore(Kind.MESSAGE, msg)
    assert not await engine.restore(Kind.CONVERSATION, conv)
    assert not await engine.restore(Kind.MESSAGE, msg)
    assert await engine.get(Kind.CONVERSATION, ALICE, "00zz") == conv
    assert await engine.get(Kind.MESSAGE, ALICE, "0100") == msg
    fresh_conv = await engine.create(Kind.CONVERSATION, ALICE, {"title": "new", "is_archived": False})
    fresh_msg = await engine.create(Kind.MESSAGE, ALICE, {"conversation_id": "00zz", "content": "n"})
    assert int(fresh_conv["sid"], 36) > int("00zz", 36)
    assert int(fresh_msg["sid"], 36) > int("0100", 36)
    assert fresh_msg["seq"] == 2
    orphan = {**msg, "sid": "0200", "conversation_id": "0zzz", "seq": 1}
    with pytest.raises(InvalidInput):
        await engine.restore(Kind.MESSAGE, orphan)
    with pytest.raises(Conflict):
        await engine.restore(Kind.CONVERSATION, {**conv, "user_id": "bob"})
    assert await engine.get(Kind.MESSAGE, ALICE, "0200") is None


async def test_restore_batch_counts_new_records(engine: Engine) -> None:
    convs = [
        (
            Kind.CONVERSATION,
            {
                "sid": f"00a{i}",
                "context": "default",
                "user_id": "alice",
                "created_at": i,
                "updated_at": i,
                "title": "",
                "is_archived": False,
            },
        )
        for i in range(3)
    ]
    assert await engine.restore_batch(convs) == 3
    assert await engine.restore_batch(convs) == 0
    assert await engine.count(Kind.CONVERSATION, ALICE) == 3


async def test_open_close_idempotent_and_closed_is_unavailable(engine: Engine) -> None:
    await engine.open()
    await engine.ping()
    await engine.aclose()
    await engine.aclose()
    with pytest.raises(StoreUnavailable):
        await engine.get(Kind.CONVERSATION, ALICE, "0001")
    with pytest.raises(StoreUnavailable):
        await engine.ping()
    await engine.open()
    await engine.ping()
    assert await engine.count(Kind.CONVERSATION, ALICE) == 0


async def test_event_loop_keeps_running_during_writes(engine: Engine) -> None:
    """Disk work happens off the loop: a ticker task advances while a large batch is written.

    If a write ran on the loop thread, the ticker could not run at all until the batch ended; since
    every engine call gives the loop back while it waits, the ticker gets at least one tick per call.
    """
    conv = await engine.create(Kind.CONVERSATION, ALICE, {"title": "", "is_archived": False})
    writes = 100
    ticks_during = 0
    done = anyio.Event()

    async def ticker() -> None:
        nonlocal ticks_during
        while not done.is_set():
            ticks_during += 1
            await anyio.sleep(0)

    async def writer() -> None:
        for i in range(writes):
            await engine.create(Kind.MESSAGE, ALICE, {"conversation_id": conv["sid"], "content": f"m{i}"})
        done.set()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            tg.start_soon(writer)
    assert ticks_during >= writes
    assert await engine.count(Kind.MESSAGE, ALICE) == writes


async def test_text_search_on_conversation_titles(engine: Engine) -> None:
    for title in ["Trip to Ghent", "Ghent trip budget and trip dates", "Groceries"]:
        await engine.create(Kind.CONVERSATION, ALICE, {"title": title, "is_archived": False})
    await engine.create(Kind.CONVERSATION, BOB, {"title": "Bob's trip", "is_archived": False})
    page = await engine.list(Kind.CONVERSATION, ALICE, ListQuery(text="trip", limit=10))
    assert [r["title"] for r in page.items] == ["Ghent trip budget and trip dates", "Trip to Ghent"]
    archived_only = await engine.list(
        Kind.CONVERSATION, ALICE, ListQuery(text="trip", filters={"is_archived": True}, limit=10)
    )
    assert archived_only.items == []
