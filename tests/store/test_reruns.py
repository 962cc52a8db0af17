"""Conformance: what the re-run step and the OpenAI endpoint's history match store -- a message's
``turn_id`` and ``superseded_by``, a turn opened on a stored user message (``rerun_of``), and a
conversation's indexed ``tail_digest``. Runs once per engine in ``tests/store/engines.py``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from store import InvalidInput, NotFound
from store.api.store import Store
from store.models import Message
from store.sqlite.engine import DB_FILE, EmbeddedEngine
from store.sqlite.schema import SCHEMA_VERSION
from tests.store.conftest import ALICE, ALICE_ELSEWHERE, BOB
from tests.store.helpers import next_ms

pytestmark = pytest.mark.anyio

#: the embedded schema of version 2, as main wrote it before ``tail_digest``
V2_SQL = Path(__file__).parent / "data" / "schema_v2.sql"


async def test_turn_id_and_superseded_by_are_stored(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "c")
    async with store.turns.open(ALICE, conv.sid, "question", channel="web", turn_id="turn1") as opening:
        assert opening.message.turn_id == "turn1" and opening.message.superseded_by == ""
    answer = await store.messages.append(
        ALICE,
        Message(conversation_id=conv.sid, role="assistant", content="answer", channel="web", turn_id="turn1"),
    )
    await store.messages.supersede(ALICE, [answer.sid], "turn2")
    got = await store.messages.get(ALICE, answer.sid)
    assert (got.turn_id, got.superseded_by, got.content) == ("turn1", "turn2", "answer")
    with pytest.raises(InvalidInput):
        await store.messages.supersede(ALICE, [answer.sid], "")
    with pytest.raises(NotFound):
        await store.messages.supersede(BOB, [answer.sid], "turn3")  # another user's message is not there


async def test_a_turn_opened_on_a_stored_user_message_stores_no_copy(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "c")
    async with store.turns.open(ALICE, conv.sid, "question", channel="web", turn_id="t1") as first:
        user = first.message
    await store.messages.append(
        ALICE,
        Message(
            conversation_id=conv.sid, role="assistant", content="partial", channel="web", status="interrupted"
        ),
    )
    async with store.turns.open(ALICE, conv.sid, "", channel="web", turn_id="t2", rerun_of=user.sid) as again:
        assert again.message == user
        assert [m.content for m in again.window] == ["question", "partial"]
    msgs = (await store.messages.list(ALICE, conv.sid)).items
    assert [m.role for m in msgs] == ["user", "assistant"]


async def test_a_re_run_of_anything_but_a_user_message_of_the_conversation_is_not_found(
    store: Store,
) -> None:
    conv = await store.conversations.create(ALICE, "c")
    other = await store.conversations.create(ALICE, "other")
    elsewhere = await store.messages.append(
        ALICE, Message(conversation_id=other.sid, role="user", content="elsewhere", channel="web")
    )
    answer = await store.messages.append(
        ALICE, Message(conversation_id=conv.sid, role="assistant", content="answer", channel="web")
    )
    for sid in (answer.sid, elsewhere.sid, "zz99"):
        with pytest.raises(NotFound):
            async with store.turns.open(ALICE, conv.sid, "", channel="web", rerun_of=sid):
                pass
    assert (await store.conversations.get(ALICE, conv.sid)).message_count == 1
    # the lease was given back: a turn opens at once
    async with store.turns.open(ALICE, conv.sid, "next", channel="web", wait_s=1.0) as opening:
        assert opening.message.content == "next"


async def test_tail_digest_finds_the_newest_conversation_of_the_scope(store: Store) -> None:
    first = await store.conversations.create(ALICE, "first", channel="api")
    second = await store.conversations.create(ALICE, "second", channel="api")
    assert await store.conversations.find_by_tail_digest(ALICE, "d1") is None
    await store.conversations.set_tail_digest(ALICE, first.sid, "d1")
    await next_ms()
    await store.conversations.set_tail_digest(ALICE, second.sid, "d1")
    found = await store.conversations.find_by_tail_digest(ALICE, "d1")
    assert found is not None and found.sid == second.sid  # a tie: the most recently updated
    await next_ms()
    await store.conversations.rename(ALICE, first.sid, "first, renamed")
    found = await store.conversations.find_by_tail_digest(ALICE, "d1")
    assert found is not None and found.sid == first.sid
    await store.conversations.set_tail_digest(ALICE, first.sid, "d2")
    found = await store.conversations.find_by_tail_digest(ALICE, "d1")
    assert found is not None and found.sid == second.sid
    # scoped: another user, another context
    assert await store.conversations.find_by_tail_digest(BOB, "d1") is None
    assert await store.conversations.find_by_tail_digest(ALICE_ELSEWHERE, "d1") is None
    assert await store.conversations.find_by_tail_digest(ALICE, "") is None
    for bad in ("", "has space", "x" * 129):
        with pytest.raises(InvalidInput):
            await store.conversations.set_tail_digest(ALICE, first.sid, bad)


async def test_the_tail_digest_lookup_is_one_indexed_read(tmp_path: Path) -> None:
    async with EmbeddedEngine(tmp_path) as engine:
        store = Store(engine)
        conv = await store.conversations.create(ALICE, "c")
        await store.conversations.set_tail_digest(ALICE, conv.sid, "d1")
    conn = sqlite3.connect(tmp_path / DB_FILE)
    try:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT data FROM conversations WHERE context = ? AND user_id = ? "
            "AND tail_digest = ? ORDER BY updated_at DESC, sid DESC LIMIT 1",
            ("default", "alice", "d1"),
        ).fetchall()
    finally:
        conn.close()
    detail = " ".join(str(row[-1]) for row in plan)
    assert "conversations_tail" in detail and "TEMP B-TREE" not in detail, detail


async def test_a_schema_2_data_dir_gains_the_tail_digest_column(tmp_path: Path) -> None:
    """A data dir written by main's schema 2 (attachments, lease owners) opens and upgrades in place."""
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.executescript(V2_SQL.read_text())
    assert "tail_digest" not in {r[1] for r in conn.execute("PRAGMA table_info(conversations)")}
    conn.execute(
        "INSERT INTO conversations (sid, context, user_id, created_at, updated_at, is_archived, data) "
        "VALUES ('0001', 'default', 'alice', 1, 1, 0, ?)",
        (
            '{"sid":"0001","context":"default","user_id":"alice","created_at":1,"updated_at":1,'
            '"title":"old","message_count":0,"is_archived":false,"tags":[]}',
        ),
    )
    conn.execute("INSERT INTO counters VALUES ('default', 'AgentConversation', 1)")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    async with EmbeddedEngine(tmp_path) as engine:
        store = Store(engine)
        old = await store.conversations.get(ALICE, "0001")
        assert old.title == "old" and old.tail_digest == ""
        assert await store.conversations.find_by_tail_digest(ALICE, "d9") is None
        await store.conversations.set_tail_digest(ALICE, "0001", "d9")
        found = await store.conversations.find_by_tail_digest(ALICE, "d9")
        assert found is not None and found.sid == "0001"
    conn = sqlite3.connect(tmp_path / DB_FILE)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (4,)
        assert conn.execute("SELECT tail_digest FROM conversations").fetchall() == [("d9",)]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
