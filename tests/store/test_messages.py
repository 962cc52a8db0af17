"""Conformance: messages (append with store-assigned gap-free seq, history windows, paging, update,
search, idempotent appends) and bad input."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import anyio
import pytest

from store.api.store import Store
from store.errors import InvalidInput, NotFound
from store.models import Message, MessageStatus
from tests.store.conftest import ALICE, BOB, MAX_CHARS
from tests.store.helpers import conversation_with, keeps_unknown_fields

pytestmark = pytest.mark.anyio


async def test_append_assigns_gap_free_seq_and_touches_conversation(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "c")
    made = [
        await store.messages.append(
            ALICE, Message(conversation_id=conv.sid, role=role, content=f"m{i}", channel=ch)
        )
        for i, (role, ch) in enumerate([("user", "cli"), ("assistant", "cli"), ("user", "web")])
    ]
    assert [m.seq for m in made] == [1, 2, 3]
    assert all(m.conversation_id == conv.sid and m.user_id == "alice" for m in made)
    assert made[0].timestamp > 0
    after = await store.conversations.get(ALICE, conv.sid)
    assert after.message_count == 3
    assert after.last_channel == "web"
    assert after.updated_at >= made[-1].created_at
    assert await store.messages.get(ALICE, made[1].sid) == made[1]


async def test_every_field_round_trips(store: Store) -> None:
    conv = await store.conversations.create(ALICE)
    calls = json.dumps([{"id": "c1", "name": "get_time", "arguments": "{}"}])
    msg = await store.messages.append(
        ALICE,
        Message(
            conversation_id=conv.sid,
            role="assistant",
            content="",
            channel="api",
            tool_calls=calls,
            sender="tg:1",
            status="interrupted",
            model="m1",
            prompt_tokens=5,
            completion_tokens=7,
            message_type="summary",
            extra={"future_field": {"nested": [1, 2]}},
        ),
    )
    tool = await store.messages.append(
        ALICE,
        Message(
            conversation_id=conv.sid,
            role="tool",
            content="12:00",
            channel="api",
            tool_call_id="c1",
            name="get_time",
        ),
    )
    got = await store.messages.get(ALICE, msg.sid)
    assert got.tool_calls == calls
    assert (got.sender, got.status, got.model, got.message_type) == ("tg:1", "interrupted", "m1", "summary")
    assert (got.prompt_tokens, got.completion_tokens) == (5, 7)
    # a generated hero_osis drops what agent_data.oschema does not declare; every other engine keeps it
    assert got.extra == ({"future_field": {"nested": [1, 2]}} if keeps_unknown_fields(store) else {})
    assert (await store.messages.get(ALICE, tool.sid)).name == "get_time"


async def test_concurrent_appends_stay_gap_free(store: Store) -> None:
    conv = await store.conversations.create(ALICE)

    async def append(i: int) -> None:
        await store.messages.append(
            ALICE, Message(conversation_id=conv.sid, role="user", content=f"m{i}", channel="cli")
        )

    async with anyio.create_task_group() as tg:
        for i in range(25):
            tg.start_soon(append, i)
    page = await store.messages.list(ALICE, conv.sid, limit=100)
    assert [m.seq for m in page.items] == list(range(1, 26))
    assert sorted(m.content for m in page.items) == sorted(f"m{i}" for i in range(25))
    assert (await store.conversations.get(ALICE, conv.sid)).message_count == 25


async def test_request_key_makes_append_idempotent(store: Store) -> None:
    conv = await store.conversations.create(ALICE)
    first = await store.messages.append(
        ALICE,
        Message(conversation_id=conv.sid, role="user", content="hi", channel="telegram"),
        request_key="tg:1",
    )
    again = await store.messages.append(
        ALICE,
        Message(conversation_id=conv.sid, role="user", content="hi", channel="telegram"),
        request_key="tg:1",
    )
    assert again == first
    other = await store.messages.append(
        ALICE,
        Message(conversation_id=conv.sid, role="user", content="hi2", channel="telegram"),
        request_key="tg:2",
    )
    assert other.seq == 2
    assert (await store.conversations.get(ALICE, conv.sid)).message_count == 2
    bob_conv = await store.conversations.create(BOB)
    bobs = await store.messages.append(
        BOB,
        Message(conversation_id=bob_conv.sid, role="user", content="b", channel="telegram"),
        request_key="tg:1",
    )
    assert (bobs.user_id, bobs.conversation_id, bobs.seq) == ("bob", bob_conv.sid, 1)


async def test_history_window_is_last_n_oldest_first(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 10)
    window = await store.messages.history(ALICE, conv.sid, limit=4)
    assert [m.seq for m in window] == [7, 8, 9, 10]
    assert [m.seq for m in await store.messages.history(ALICE, conv.sid, limit=50)] == list(range(1, 11))


async def test_summary_boundary_starts_the_window_at_the_summary(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 6)
    summary = await store.messages.append(
        ALICE,
        Message(
            conversation_id=conv.sid,
            role="system",
            content="summary of 1-6",
            channel="cli",
            message_type="summary",
        ),
    )
    await store.messages.append(
        ALICE, Message(conversation_id=conv.sid, role="user", content="next", channel="cli")
    )
    await store.conversations.set_summary_boundary(ALICE, conv.sid, summary.seq)
    assert [m.seq for m in await store.messages.history(ALICE, conv.sid)] == [7, 8]


async def test_list_messages_pages_both_ways(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 9)
    for descending in (False, True):
        seqs: list[int] = []
        cursor = None
        while True:
            page = await store.messages.list(ALICE, conv.sid, limit=4, cursor=cursor, descending=descending)
            seqs += [m.seq for m in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        expected = list(range(1, 10))
        assert seqs == (expected[::-1] if descending else expected)


async def test_update_message(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 2)
    msg = (await store.messages.history(ALICE, conv.sid))[1]
    changed = await store.messages.update(ALICE, msg.sid, content="final text", status="error", seq=99)
    assert (changed.content, changed.status, changed.seq) == ("final text", "error", 2)
    assert (await store.messages.get(ALICE, msg.sid)).content == "final text"
    with pytest.raises(InvalidInput):
        await store.messages.update(ALICE, msg.sid, status="bogus")
    with pytest.raises(InvalidInput):
        await store.messages.update(ALICE, msg.sid, content="x" * (MAX_CHARS + 1))
    with pytest.raises(NotFound):
        await store.messages.update(ALICE, "zzzz", content="x")
    assert (await store.messages.get(ALICE, msg.sid)).content == "final text"


async def test_search_messages_ranks_and_is_scoped(store: Store) -> None:
    conv = await store.conversations.create(ALICE)
    for text in ["the weather in Ghent is rainy", "rainy days and rainy weather in Ghent", "pasta recipe"]:
        await store.messages.append(
            ALICE, Message(conversation_id=conv.sid, role="user", content=text, channel="cli")
        )
    bob_conv = await store.conversations.create(BOB)
    await store.messages.append(
        BOB,
        Message(
            conversation_id=bob_conv.sid, role="user", content="rainy weather in Ghent too", channel="cli"
        ),
    )
    found = await store.messages.search(ALICE, "rainy Ghent weather")
    assert [m.content for m in found] == [
        "rainy days and rainy weather in Ghent",
        "the weather in Ghent is rainy",
    ]
    assert await store.messages.search(ALICE, "   ") == []
    assert await store.messages.search(ALICE, 'rainy" OR * NEAR(') != []


async def test_content_limit(store: Store) -> None:
    conv = await store.conversations.create(ALICE)
    ok = await store.messages.append(
        ALICE, Message(conversation_id=conv.sid, role="user", content="x" * MAX_CHARS, channel="cli")
    )
    assert len(ok.content) == MAX_CHARS
    with pytest.raises(InvalidInput, match="too long"):
        await store.messages.append(
            ALICE,
            Message(conversation_id=conv.sid, role="user", content="x" * (MAX_CHARS + 1), channel="cli"),
        )
    assert (await store.conversations.get(ALICE, conv.sid)).message_count == 1


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"role": "wizard"}, "role"),
        ({"status": "done"}, "status"),
        ({"content": "nul\x00byte"}, "binary data"),
        ({"tool_calls": "{not json"}, "tool_calls"),
        ({"tool_calls": '{"a": 1}'}, "tool_calls"),
    ],
)
async def test_bad_messages_change_nothing(store: Store, kwargs: dict[str, Any], reason: str) -> None:
    conv = await store.conversations.create(ALICE)
    message = dataclasses.replace(Message(conversation_id=conv.sid, content="hello", channel="cli"), **kwargs)
    with pytest.raises(InvalidInput, match=reason):
        await store.messages.append(ALICE, message)
    assert (await store.conversations.get(ALICE, conv.sid)).message_count == 0
    assert (await store.messages.list(ALICE, conv.sid)).items == []


async def test_append_to_missing_conversation(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.messages.append(
            ALICE, Message(conversation_id="zzzz", role="user", content="hi", channel="cli")
        )
    with pytest.raises(InvalidInput):
        await store.messages.append(
            ALICE, Message(conversation_id="Not An Id", role="user", content="hi", channel="cli")
        )
    assert (await store.records.stats(ALICE)).messages == 0


async def test_interrupted_status_value(store: Store) -> None:
    conv = await store.conversations.create(ALICE)
    msg = await store.messages.append(
        ALICE,
        Message(
            conversation_id=conv.sid,
            role="assistant",
            content="partial",
            channel="cli",
            status=MessageStatus.INTERRUPTED,
        ),
    )
    assert msg.status == "interrupted"
