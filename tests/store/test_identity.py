"""Identity links, pairing codes, a conversation's model and moving a user's records: every engine.

Links and codes live in the reserved context ``_system`` (outside every user's context); they go
through export/import like everything else.
"""

from __future__ import annotations

import io

import pytest

from store.api.links import IDENTITY_SCOPE, IdentityLink, PairingCode
from store.api.store import Store
from store.errors import Conflict, InvalidInput, NotFound
from store.models import SYSTEM_CONTEXT, Message, Scope, validate_context
from store.transfer import export_jsonl, import_jsonl
from tests.store.conftest import ALICE, BOB
from tests.store.engines import ENGINES

pytestmark = pytest.mark.anyio

LOCAL = Scope("default", "local")
ROOT = Scope("default", "root")


def code(value: str, external_id: str = "42", issued_at: int = 1000) -> PairingCode:
    return PairingCode("telegram", value, external_id, "Ann Lee", "ann", issued_at, issued_at + 3_600_000)


async def test_links_set_get_list_delete(store: Store) -> None:
    assert await store.links.get("telegram", "42") is None
    await store.links.set(IdentityLink("telegram", "42", "alice", 1000, "cli:root"))
    await store.links.set(IdentityLink("telegram", "7", "bob", 2000, "web:bob"))
    assert await store.links.get("telegram", "42") == IdentityLink(
        "telegram", "42", "alice", 1000, "cli:root"
    )
    # re-linking replaces, never duplicates
    await store.links.set(IdentityLink("telegram", "42", "carol", 3000, "cli:root"))
    assert [(x.external_id, x.user) for x in await store.links.list("telegram")] == [
        ("42", "carol"),
        ("7", "bob"),
    ]
    assert await store.links.delete("telegram", "42") is True
    assert await store.links.delete("telegram", "42") is False
    assert [x.user for x in await store.links.list("telegram")] == ["bob"]
    # a link is not a record of any user's context: the users see nothing of it
    assert (await store.records.stats(Scope("default", "bob"))).conversations == 0
    assert SYSTEM_CONTEXT in await store.engine.contexts()


async def test_pairing_codes_are_taken_once(store: Store) -> None:
    await store.links.add_pairing_code(code("ABCD2345", issued_at=2000))
    await store.links.add_pairing_code(code("ZZZZ9999", external_id="43", issued_at=1000))
    assert [c.code for c in await store.links.list_pairing_codes("telegram")] == ["ZZZZ9999", "ABCD2345"]
    taken = await store.links.take_pairing_code("telegram", "ABCD2345")
    assert taken == code("ABCD2345", issued_at=2000)
    assert await store.links.take_pairing_code("telegram", "ABCD2345") is None
    assert [c.code for c in await store.links.list_pairing_codes("telegram")] == ["ZZZZ9999"]
    with pytest.raises(InvalidInput):
        await store.links.take_pairing_code("telegram", "no.dots")


async def test_the_reserved_context_is_not_a_user_context(store: Store) -> None:
    with pytest.raises(InvalidInput):
        validate_context(SYSTEM_CONTEXT)
    # the store itself may use it
    await store.state.set(IDENTITY_SCOPE, "k", "v")
    assert await store.state.get(IDENTITY_SCOPE, "k") == "v"


async def test_links_and_codes_travel_through_export_and_import(
    store: Store, tmp_path_factory: pytest.TempPathFactory
) -> None:
    await store.links.set(IdentityLink("telegram", "42", "alice", 1000, "cli:root"))
    await store.links.add_pairing_code(code("ABCD2345"))
    conv = await store.conversations.create(ALICE, "x")
    await store.conversations.set_model(ALICE, conv.sid, "big-model")
    out = io.StringIO()
    await export_jsonl(store.engine, out, context=None)
    assert '"_system"' in out.getvalue() and "link.telegram.42" in out.getvalue()
    for name in sorted(ENGINES):
        async with ENGINES[name](tmp_path_factory.mktemp(name)) as other:
            target = Store(other)
            dumped = tmp_path_factory.mktemp("dump") / "export.jsonl"
            dumped.write_text(out.getvalue(), encoding="utf-8")
            await import_jsonl(other, dumped)
            assert await target.links.get("telegram", "42") == IdentityLink(
                "telegram", "42", "alice", 1000, "cli:root"
            )
            assert [c.code for c in await target.links.list_pairing_codes("telegram")] == ["ABCD2345"]
            assert (await target.conversations.get(ALICE, conv.sid)).model == "big-model"
            again = io.StringIO()
            await export_jsonl(other, again, context=None)
            assert again.getvalue() == out.getvalue()


async def test_conversation_model_is_stored(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "x")
    assert conv.model == ""
    changed = await store.conversations.set_model(ALICE, conv.sid, "other-model")
    assert changed.model == "other-model"
    assert (await store.conversations.get(ALICE, conv.sid)).model == "other-model"
    listed = await store.conversations.list(ALICE)
    assert [c.model for c in listed.items] == ["other-model"]
    with pytest.raises(InvalidInput):
        await store.conversations.set_model(ALICE, conv.sid, "bad\nname")
    with pytest.raises(NotFound):
        await store.conversations.set_model(BOB, conv.sid, "x")


async def _fill(store: Store, scope: Scope, text: str) -> str:
    conv = await store.conversations.create(scope, text)
    await store.messages.append(
        scope,
        Message(conversation_id=conv.sid, role="user", content=text, channel="web"),
        request_key=f"rk-{text}",
    )
    await store.memories.add(scope, f"remember {text}")
    await store.state.set(scope, "active_conversation", conv.sid)
    return conv.sid


async def test_rename_user_moves_everything_in_every_context(sid_store: Store) -> None:
    store = sid_store
    first = await _fill(store, LOCAL, "one")
    other = Scope("work", "local")
    second = await _fill(store, other, "two")
    await store.links.set(IdentityLink("telegram", "42", "local", 1000, "cli:x"))
    moved = await store.rename_user("local", "root")
    assert moved["default"]["AgentConversation"] == 1 and moved["work"]["AgentMessage"] == 1
    assert await store.users_with_data("local") == []
    assert (await store.records.stats(LOCAL)).conversations == 0
    conv = await store.conversations.get(ROOT, first)
    assert conv.user_id == "root" and conv.message_count == 1
    [msg] = (await store.messages.list(ROOT, first)).items
    assert msg.content == "one" and msg.user_id == "root"
    assert [m.content for m in (await store.memories.list(ROOT)).items] == ["remember one"]
    assert await store.state.get(ROOT, "active_conversation") == first
    assert (await store.conversations.get(Scope("work", "root"), second)).title == "two"
    # text search still finds the moved records, in their new scope only
    assert [m.content for m in await store.messages.search(ROOT, "one")] == ["one"]
    assert await store.messages.search(LOCAL, "one") == []
    # the new owner keeps appending to the moved conversation, seq continues
    appended = await store.messages.append(
        ROOT, Message(conversation_id=first, role="assistant", content="hi", channel="cli")
    )
    assert appended.seq == 2
    link = await store.links.get("telegram", "42")
    assert link is not None and link.user == "root"


async def test_rename_user_refuses_a_target_with_data_unless_merging(sid_store: Store) -> None:
    store = sid_store
    mine = await _fill(store, LOCAL, "mine")
    theirs = await _fill(store, ROOT, "theirs")
    await store.memories.add(LOCAL, "remember theirs")  # the same memory on both sides
    with pytest.raises(Conflict):
        await store.rename_user("local", "root")
    assert (await store.records.stats(LOCAL)).conversations == 1  # nothing moved
    moved = await store.rename_user("local", "root", merge=True)
    assert moved["default"]["AgentConversation"] == 1
    convs = await store.conversations.list(ROOT)
    assert sorted(c.sid for c in convs.items) == sorted([mine, theirs])
    # clashes: the target's active conversation and its memory win, no duplicates
    assert await store.state.get(ROOT, "active_conversation") == theirs
    memories = sorted(m.content for m in (await store.memories.list(ROOT)).items)
    assert memories == ["remember mine", "remember theirs"]
    assert await store.users_with_data("local") == []


async def test_rename_user_bad_input(store: Store) -> None:
    with pytest.raises(InvalidInput):
        await store.rename_user("local", "local")
    with pytest.raises(InvalidInput):
        await store.rename_user("local", "")
    assert await store.rename_user("nobody", "root") == {}
