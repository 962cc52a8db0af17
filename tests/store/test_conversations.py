"""Conformance: conversations (create, get, list by recency with paging, rename, archive, tag, delete,
clear) and scope isolation. Runs once per engine in ``tests/store/engines.py``."""

from __future__ import annotations

import pytest

from store.api.store import Store
from store.errors import InvalidInput, NotFound
from store.models import SID_RE, Message, Scope
from tests.store.conftest import ALICE, ALICE_ELSEWHERE, BOB
from tests.store.helpers import conversation_with, next_ms, sids

pytestmark = pytest.mark.anyio


async def test_create_and_get(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "  Trip planning ", channel="web", tags=["a", "b", "a"])
    assert SID_RE.match(conv.sid)
    assert (conv.context, conv.user_id) == ("default", "alice")
    assert conv.title == "Trip planning"
    assert conv.tags == ("a", "b")
    assert conv.message_count == 0
    assert conv.last_channel == "web"
    assert conv.created_at == conv.updated_at > 0
    assert await store.conversations.get(ALICE, conv.sid) == conv


async def test_sids_are_distinct(store: Store) -> None:
    made = [await store.conversations.create(ALICE, f"c{i}") for i in range(5)]
    assert len({c.sid for c in made}) == 5


async def test_list_most_recent_first_and_touch_on_append(store: Store) -> None:
    first = await store.conversations.create(ALICE, "first")
    await next_ms()
    second = await store.conversations.create(ALICE, "second")
    await next_ms()
    third = await store.conversations.create(ALICE, "third")
    assert sids(await store.conversations.list(ALICE)) == [third.sid, second.sid, first.sid]
    await next_ms()
    await store.messages.append(
        ALICE, Message(conversation_id=first.sid, role="user", content="hello", channel="telegram")
    )
    listed = (await store.conversations.list(ALICE)).items
    assert [c.sid for c in listed] == [first.sid, third.sid, second.sid]
    assert listed[0].message_count == 1
    assert listed[0].last_channel == "telegram"


async def test_paging_has_no_dupes_or_gaps(store: Store) -> None:
    made = [await store.conversations.create(ALICE, f"c{i}") for i in range(7)]
    everything = sids(await store.conversations.list(ALICE, limit=100))
    assert sorted(everything) == sorted(c.sid for c in made)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.conversations.list(ALICE, limit=3, cursor=cursor)
        seen += sids(page)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == everything
    assert pages == 3


async def test_rename_archive_tag(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "old")
    other = await store.conversations.create(ALICE, "other")
    renamed = await store.conversations.rename(ALICE, conv.sid, "new title")
    assert renamed.title == "new title"
    assert renamed.updated_at >= conv.updated_at
    tagged = await store.conversations.tag(ALICE, conv.sid, ["x", " y ", "x", ""])
    assert tagged.tags == ("x", "y")
    archived = await store.conversations.archive(ALICE, conv.sid)
    assert archived.is_archived
    assert sids(await store.conversations.list(ALICE)) == [other.sid]
    assert sids(await store.conversations.list(ALICE, archived=True)) == [conv.sid]
    assert sorted(sids(await store.conversations.list(ALICE, archived=None))) == sorted([conv.sid, other.sid])
    back = await store.conversations.archive(ALICE, conv.sid, archived=False)
    assert not back.is_archived
    assert (await store.conversations.get(ALICE, conv.sid)).title == "new title"


@pytest.mark.parametrize("title", ["x" * 201, "bad\x07title", "line\nbreak"])
async def test_bad_titles_are_refused(store: Store, title: str) -> None:
    with pytest.raises(InvalidInput):
        await store.conversations.create(ALICE, title)
    assert (await store.conversations.list(ALICE, archived=None)).items == []


async def test_too_many_tags_refused(store: Store) -> None:
    conv = await store.conversations.create(ALICE)
    with pytest.raises(InvalidInput):
        await store.conversations.tag(ALICE, conv.sid, [f"t{i}" for i in range(40)])
    with pytest.raises(InvalidInput):
        await store.conversations.tag(ALICE, conv.sid, ["t" * 65])
    assert (await store.conversations.get(ALICE, conv.sid)).tags == ()


async def test_delete_removes_messages(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 4)
    keep = await conversation_with(store, ALICE, 2, title="keep")
    msg = (await store.messages.history(ALICE, conv.sid)).pop()
    await store.conversations.delete(ALICE, conv.sid)
    with pytest.raises(NotFound):
        await store.conversations.get(ALICE, conv.sid)
    with pytest.raises(NotFound):
        await store.messages.get(ALICE, msg.sid)
    with pytest.raises(NotFound):
        await store.conversations.delete(ALICE, conv.sid)
    assert (await store.records.stats(ALICE)).messages == 2
    assert len(await store.messages.history(ALICE, keep.sid)) == 2


async def test_clear_keeps_archived_turns(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 3)
    cleared = await store.conversations.clear(ALICE, conv.sid)
    assert cleared.clear_seq == 3
    assert await store.messages.history(ALICE, conv.sid) == []
    assert len((await store.messages.list(ALICE, conv.sid)).items) == 3
    assert (await store.messages.list(ALICE, conv.sid, include_archived=False)).items == []
    after = await store.messages.append(
        ALICE, Message(conversation_id=conv.sid, role="user", content="fresh start", channel="cli")
    )
    assert after.seq == 4
    assert [m.content for m in await store.messages.history(ALICE, conv.sid)] == ["fresh start"]
    again = await store.conversations.clear(ALICE, conv.sid)
    assert again.clear_seq == 4


async def test_unknown_and_malformed_ids(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.conversations.get(ALICE, "zzzz")
    for bad in ["", "../etc", "UPPER", "a b", "x" * 33]:
        with pytest.raises(InvalidInput):
            await store.conversations.get(ALICE, bad)


@pytest.mark.parametrize("name", ["", "Default", "-lead", "_lead", "a b", "x" * 65, "café", "a/b", "a.b"])
def test_invalid_context_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        Scope(name, "alice")


@pytest.mark.parametrize("user", ["", "x" * 129, "bad\nuser"])
def test_invalid_users(user: str) -> None:
    with pytest.raises(InvalidInput):
        Scope("default", user)


@pytest.mark.parametrize("intruder", [BOB, ALICE_ELSEWHERE], ids=["other-user", "other-context"])
async def test_foreign_ids_behave_like_missing(store: Store, intruder: Scope) -> None:
    conv = await conversation_with(store, ALICE, 2)
    msg = (await store.messages.history(ALICE, conv.sid))[0]
    missing = "zzzz"
    for sid in (conv.sid, missing):
        with pytest.raises(NotFound) as caught:
            await store.conversations.get(intruder, sid)
        assert str(caught.value) == f"conversation {sid!r} not found"
    attempts = [
        store.conversations.rename(intruder, conv.sid, "pwned"),
        store.conversations.archive(intruder, conv.sid),
        store.conversations.tag(intruder, conv.sid, ["x"]),
        store.conversations.clear(intruder, conv.sid),
        store.conversations.delete(intruder, conv.sid),
        store.messages.append(
            intruder, Message(conversation_id=conv.sid, role="user", content="hi", channel="cli")
        ),
        store.messages.history(intruder, conv.sid),
        store.messages.list(intruder, conv.sid),
        store.messages.get(intruder, msg.sid),
        store.messages.update(intruder, msg.sid, content="pwned"),
    ]
    for attempt in attempts:
        with pytest.raises(NotFound):
            await attempt
    assert (await store.conversations.list(intruder, archived=None)).items == []
    assert (await store.records.stats(intruder)).messages == 0
    after = await store.conversations.get(ALICE, conv.sid)
    assert after == conv
    assert [m.content for m in await store.messages.history(ALICE, conv.sid)] == [
        "chat message 1",
        "chat message 2",
    ]


async def test_list_with_text_finds_titles_in_scope(store: Store) -> None:
    for title in ["Trip to Ghent", "Ghent trip budget and trip dates", "Groceries"]:
        await store.conversations.create(ALICE, title)
    old = await store.conversations.create(ALICE, "Old trip")
    await store.conversations.archive(ALICE, old.sid)
    await store.conversations.create(BOB, "Bob's trip")
    await store.conversations.create(ALICE_ELSEWHERE, "Trip elsewhere")
    found = await store.conversations.list(ALICE, text="trip")
    assert [c.title for c in found.items] == ["Ghent trip budget and trip dates", "Trip to Ghent"]
    assert found.next_cursor is None
    everything = await store.conversations.list(ALICE, text="TRIP", archived=None)
    assert {c.title for c in everything.items} == {
        "Ghent trip budget and trip dates",
        "Trip to Ghent",
        "Old trip",
    }
    assert (await store.conversations.list(ALICE, text="nothing-like-it")).items == []
    # blank text is no filter: the plain most-recent-first list
    assert len((await store.conversations.list(ALICE, text="  ")).items) == 3
    with pytest.raises(InvalidInput):
        await store.conversations.list(ALICE, text="trip", cursor="abc")
