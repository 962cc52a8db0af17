"""Attachments (conformance, every engine): stored apart from the message, scoped, capped, deleted
with their conversation; and a data dir of schema version 1 (main at f3ae3be) opens and gains them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from store import Attachment, InvalidInput, NewAttachment, NotFound, attachment_bytes
from store.api.store import Store
from store.models import Kind, Message
from store.sqlite.engine import DB_FILE, EmbeddedEngine
from store.sqlite.schema import SCHEMA_VERSION
from tests.media_files import png
from tests.store.conftest import ALICE, ALICE_ELSEWHERE, BOB

pytestmark = pytest.mark.anyio

V1_SQL = Path(__file__).parent / "data" / "schema_v1.sql"


async def test_attachments_are_stored_whole_and_read_back(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "pics")
    image = png(5, 7)
    [att] = await store.attachments.add(
        ALICE, conv.sid, [NewAttachment(image, "image/png", "cat.png", 5, 7)], channel="web"
    )
    got = await store.attachments.get(ALICE, att.sid)
    assert isinstance(got, Attachment)
    assert attachment_bytes(got) == image
    assert (got.name, got.mime, got.size, got.width, got.height, got.channel) == (
        "cat.png",
        "image/png",
        len(image),
        5,
        7,
        "web",
    )
    assert got.conversation_id == conv.sid and len(got.sha256) == 64
    # the history never carries the bytes: a message refers to the attachment by its sid
    msg = await store.messages.append(
        ALICE, Message(conversation_id=conv.sid, role="user", content="look", channel="web")
    )
    assert att.data not in msg.content


async def test_attachments_are_scoped(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "pics")
    [att] = await store.attachments.add(ALICE, conv.sid, [NewAttachment(png(), "image/png")])
    for other in (BOB, ALICE_ELSEWHERE):
        with pytest.raises(NotFound):
            await store.attachments.get(other, att.sid)


async def test_attachment_cap_and_empty_are_refused_and_store_nothing(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "pics")
    store.attachments.max_bytes = 100
    with pytest.raises(InvalidInput, match="too large: 101 bytes, the limit is 100"):
        await store.attachments.add(
            ALICE, conv.sid, [NewAttachment(png(), "image/png"), NewAttachment(b"x" * 101, "image/png")]
        )
    with pytest.raises(InvalidInput, match="empty"):
        await store.attachments.add(ALICE, conv.sid, [NewAttachment(b"", "image/png")])
    assert await store.engine.count(Kind.ATTACHMENT, ALICE) == 0


async def test_attachments_go_with_their_conversation(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "pics")
    keep = await store.conversations.create(ALICE, "other")
    [gone] = await store.attachments.add(ALICE, conv.sid, [NewAttachment(png(), "image/png")])
    [kept] = await store.attachments.add(ALICE, keep.sid, [NewAttachment(png(), "image/png")])
    await store.conversations.delete(ALICE, conv.sid)
    with pytest.raises(NotFound):
        await store.attachments.get(ALICE, gone.sid)
    assert (await store.attachments.get(ALICE, kept.sid)).sid == kept.sid


async def test_dropped_attachments_are_gone(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "pics")
    made = await store.attachments.add(
        ALICE, conv.sid, [NewAttachment(png(), "image/png"), NewAttachment(png(2, 2), "image/png")]
    )
    await store.attachments.drop(ALICE, [a.sid for a in made])
    assert await store.engine.count(Kind.ATTACHMENT, ALICE) == 0


async def test_a_large_attachment_fits_every_engine(store: Store) -> None:
    """5 MB (the default cap) crosses the OSIS transport in one call."""
    conv = await store.conversations.create(ALICE, "big")
    blob = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    [att] = await store.attachments.add(ALICE, conv.sid, [NewAttachment(blob, "image/png", "big.png")])
    assert attachment_bytes(await store.attachments.get(ALICE, att.sid)) == blob


async def test_a_schema_v1_data_dir_opens_and_upgrades(tmp_path: Path) -> None:
    """A data dir written by the old code (schema version 1, before attachments) keeps its data and
    gains the attachments table when opened."""
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.executescript(V1_SQL.read_text())
    conn.execute(
        "INSERT INTO conversations (sid, context, user_id, created_at, updated_at, is_archived, data) "
        "VALUES ('0001', 'default', 'alice', 1, 1, 0, ?)",
        (
            '{"sid":"0001","context":"default","user_id":"alice","created_at":1,"updated_at":1,'
            '"title":"old","message_count":0,"is_archived":false,"tags":[]}',
        ),
    )
    conn.execute("INSERT INTO counters VALUES ('default', 'AgentConversation', 1)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    assert "attachments" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()

    async with EmbeddedEngine(tmp_path) as engine:
        store = Store(engine)
        conv = await store.conversations.get(ALICE, "0001")
        assert conv.title == "old"
        await store.messages.append(
            ALICE, Message(conversation_id=conv.sid, role="user", content="still here", channel="cli")
        )
        [att] = await store.attachments.add(ALICE, conv.sid, [NewAttachment(png(), "image/png")])
        assert attachment_bytes(await store.attachments.get(ALICE, att.sid)) == png()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("SELECT count(*) FROM attachments").fetchone() == (1,)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
