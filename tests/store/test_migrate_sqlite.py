"""``migrate-sqlite``: a legacy database built here (odd column names, unknown columns, bad rows), twice."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

import pytest

from channels.subcommands.osis import migrate_sqlite
from config import Settings, StoreSettings
from store.api.store import Store
from store.engine import Engine, ListQuery
from store.errors import InvalidInput
from store.legacy.migrate import migrate
from store.models import Kind, Scope

SCOPE = Scope("legacy", "carol")
T0 = 1_700_000_000  # seconds


def build_legacy(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE Conversations (ID INTEGER PRIMARY KEY, Name TEXT, Created TEXT, owner TEXT, mood TEXT);
        CREATE TABLE messages (msg_id INTEGER PRIMARY KEY, CONV_ID INTEGER, sender_role TEXT, Text TEXT,
                               ts REAL, extra_col TEXT);
        CREATE TABLE memories (id TEXT, fact TEXT, category TEXT, chat_id INTEGER);
        CREATE TABLE audit_log (id INTEGER PRIMARY KEY, tool_name TEXT, args TEXT, output TEXT,
                                success INTEGER, elapsed_ms REAL, conv_id INTEGER, timestamp INTEGER);
        CREATE TABLE usage_log (id INTEGER PRIMARY KEY, model_name TEXT, input_tokens INTEGER,
                                output_tokens INTEGER, latency REAL, conv_id INTEGER, created_at TEXT,
                                cost REAL);
        """
    )
    db.executemany(
        "INSERT INTO Conversations VALUES (?, ?, ?, ?, ?)",
        [
            (1, "Trip planning", "2024-03-01T10:00:00Z", "carol", "happy"),
            (2, "Recipes", "2024-03-02", "carol", None),
        ],
    )
    # inserted out of order: seq must follow the timestamps (ts in seconds), then the ids
    db.executemany(
        "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
        [
            (10, 1, "assistant", "Lisbon is lovely.", T0 + 20, "x"),
            (11, 1, "USER", "Where should I go?", T0 + 10, None),
            (12, 1, "human", "And in May?", T0 + 30, "y"),
            (13, 2, "user", "Pancakes?", T0 + 5, None),
            (14, 1, "alien", "beep", T0 + 40, None),  # bad: unknown role
            (15, 99, "user", "orphan", T0 + 50, None),  # bad: no such conversation
            (16, 2, "assistant", None, T0 + 60, None),  # bad: no content
        ],
    )
    db.executemany(
        "INSERT INTO memories VALUES (?, ?, ?, ?)",
        [
            ("m1", "Carol likes Lisbon", "preference", 1),
            ("m2", "  ", "fact", None),
            ("m3", "Vegetarian", None, 7),
        ],
    )
    db.executemany(
        "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (1, "web_search", '{"q": "lisbon"}', "3 results", 1, 120.5, 1, T0 * 1000),
            (2, None, "{}", "", 0, 1, 1, 0),
        ],
    )
    db.execute("INSERT INTO usage_log VALUES (1, 'gpt-4o', 100, 20, 850.0, 1, '2024-03-01 10:00:05', 0.01)")
    db.commit()
    db.close()


@pytest.mark.anyio
async def test_migration_maps_leniently_and_is_idempotent(engine: Engine, tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.db"
    build_legacy(legacy)
    first = await migrate(engine, SCOPE, legacy)
    t = first.tables
    assert (t["conversations"].imported, t["conversations"].skipped) == (2, 0)
    assert (t["messages"].imported, t["messages"].skipped) == (4, 3)
    assert dict(t["messages"].reasons) == {"unknown role": 1, "unknown conversation": 1, "no content": 1}
    assert (t["memories"].imported, t["memories"].skipped) == (2, 1)
    assert (t["audit_log"].imported, t["audit_log"].skipped) == (1, 1)
    assert (t["usage_log"].imported, t["usage_log"].skipped) == (1, 0)

    store = Store(engine)
    convs = {c.title: c for c in (await store.conversations.list(SCOPE)).items}
    trip = convs["Trip planning"]
    assert trip.extra["legacy"] == {"owner": "carol", "mood": "happy", "created_at": "2024-03-01T10:00:00Z"}
    assert trip.message_count == 3
    history = await store.messages.history(SCOPE, trip.sid)
    assert [(m.seq, m.role, m.content) for m in history] == [
        (1, "user", "Where should I go?"),
        (2, "assistant", "Lisbon is lovely."),
        (3, "user", "And in May?"),
    ]
    assert history[0].timestamp == (T0 + 10) * 1000 and history[0].channel == "legacy"
    assert history[1].extra["legacy"]["extra_col"] == "x"
    mems = {m.content: m for m in (await store.memories.list(SCOPE)).items}
    assert mems["Carol likes Lisbon"].kind == "preference"
    assert mems["Carol likes Lisbon"].source_conversation_id == trip.sid
    assert (
        mems["Vegetarian"].source_conversation_id == ""
        and mems["Vegetarian"].extra["legacy"]["source_conversation_id"] == 7
    )
    audit = (await store.records.list_audit(SCOPE)).items
    assert [(a.tool, a.ok, a.duration_ms, a.conversation_id) for a in audit] == [
        ("web_search", True, 120.5, trip.sid)
    ]
    usage = (await store.records.list_usage(SCOPE)).items
    assert (usage[0].model, usage[0].prompt_tokens, usage[0].completion_tokens, usage[0].latency_ms) == (
        "gpt-4o",
        100,
        20,
        850.0,
    )
    assert usage[0].extra["legacy"]["cost"] == 0.01

    second = await migrate(engine, SCOPE, legacy)
    for name, rep in second.tables.items():
        assert rep.imported == 0, name
        assert rep.present == first.tables[name].imported, name
        assert rep.skipped == first.tables[name].skipped, name
    assert await engine.count(Kind.MESSAGE, SCOPE) == 4
    assert await engine.count(Kind.CONVERSATION, SCOPE) == 2
    page = await engine.list(Kind.MEMORY, SCOPE, ListQuery(limit=10))
    assert len(page.items) == 2


@pytest.mark.anyio
async def test_refuses_files_that_are_not_legacy_databases(engine: Engine, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("conversations, messages\n" * 50)
    with pytest.raises(InvalidInput, match="not an SQLite database"):
        await migrate(engine, SCOPE, text)
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE conversations (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(InvalidInput, match=r"missing table\(s\) messages"):
        await migrate(engine, SCOPE, other)
    with pytest.raises(InvalidInput, match="no such file"):
        await migrate(engine, SCOPE, tmp_path / "absent.db")
    with pytest.raises(InvalidInput, match="is a directory, not an SQLite database file"):
        await migrate(engine, SCOPE, tmp_path)
    assert await engine.contexts() == []


def test_command_reports_counts_and_refuses_junk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    legacy = tmp_path / "legacy.db"
    build_legacy(legacy)
    settings = Settings(store=StoreSettings(path=tmp_path / "data"))
    args = argparse.Namespace(path=str(legacy), context="legacy", user="carol")
    assert migrate_sqlite(args, settings) == 0
    out = capsys.readouterr().out
    assert "messages: 4 imported, 0 already present, 3 skipped" in out
    assert migrate_sqlite(args, settings) == 0
    assert "messages: 0 imported, 4 already present, 3 skipped" in capsys.readouterr().out
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00\x01binary junk" * 10)
    assert migrate_sqlite(argparse.Namespace(path=str(junk), context="legacy", user="carol"), settings) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an SQLite database" in err
    data_dir = tmp_path / "fresh-data"
    fresh = Settings(store=StoreSettings(path=data_dir))
    folder = argparse.Namespace(path=str(tmp_path), context="legacy", user="carol")
    assert migrate_sqlite(folder, fresh) == 1
    err = capsys.readouterr().err
    assert err == f"hero-agent migrate-sqlite: {tmp_path}: is a directory, not an SQLite database file\n"
    assert not data_dir.exists()  # nothing written, not even an empty store
    bad_ctx = argparse.Namespace(path=str(legacy), context="Bad Context", user="carol")
    assert migrate_sqlite(bad_ctx, settings) == 1
    assert "invalid context" in capsys.readouterr().err


def build_multi_user(path: Path) -> None:
    """A legacy database whose rows carry their users (``owner``, ``user_id``)."""
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE conversations (id INTEGER PRIMARY KEY, title TEXT, owner TEXT);
        CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation_id INTEGER, role TEXT, content TEXT,
                               user_id TEXT);
        CREATE TABLE memories (id INTEGER PRIMARY KEY, content TEXT, user_id TEXT, conversation_id INTEGER);
        INSERT INTO conversations VALUES (1, 'alice talks', 'alice'), (2, 'bob talks', 'bob'),
                                         (3, 'nobody''s', NULL), (4, 'numbered', 42);
        INSERT INTO messages VALUES (1, 1, 'user', 'hi from alice', 'alice'),
                                    (2, 2, 'user', 'hi from bob', 'someone else'),
                                    (3, 3, 'user', 'hi from nobody', NULL),
                                    (4, 4, 'user', 'hi from 42', NULL);
        INSERT INTO memories VALUES (1, 'alice likes tea', 'alice', 1), (2, 'bob likes coffee', 'bob', 1),
                                    (3, 'bad user', 'a' || char(10) || 'b', NULL),
                                    (4, 'unowned fact', NULL, 2);
        """
    )
    db.commit()
    db.close()


@pytest.mark.anyio
async def test_rows_keep_their_users(engine: Engine, tmp_path: Path) -> None:
    legacy = tmp_path / "multi.db"
    build_multi_user(legacy)
    report = await migrate(engine, Scope("legacy", "carol"), legacy)

    async def titles(user: str) -> list[str]:
        page = await engine.list(Kind.CONVERSATION, Scope("legacy", user), ListQuery(limit=100))
        return sorted(r["title"] for r in page.items)

    assert await titles("alice") == ["alice talks"]
    assert await titles("bob") == ["bob talks"]
    assert await titles("42") == ["numbered"]
    assert await titles("carol") == ["nobody's"]  # no user in the row: the default (--user)
    # a message is its conversation's user's, whatever its own column says
    bobs = await engine.list(Kind.MESSAGE, Scope("legacy", "bob"), ListQuery(limit=100))
    assert [m["content"] for m in bobs.items] == ["hi from bob"]
    # a memory keeps its own user; a reference to another user's conversation is kept in legacy only
    # and a row without a user follows its conversation (the unowned fact, in bob's conversation 2)
    bob_mem = (await engine.list(Kind.MEMORY, Scope("legacy", "bob"), ListQuery(limit=100))).items
    by_content = {m["content"]: m for m in bob_mem}
    assert sorted(by_content) == ["bob likes coffee", "unowned fact"]
    assert by_content["bob likes coffee"]["source_conversation_id"] == ""
    assert by_content["bob likes coffee"]["legacy"]["source_conversation_id"] == 1
    assert by_content["unowned fact"]["source_conversation_id"] != ""
    alice_mem = (await engine.list(Kind.MEMORY, Scope("legacy", "alice"), ListQuery(limit=100))).items
    assert [m["content"] for m in alice_mem] == ["alice likes tea"]
    assert report.tables["memories"].reasons == {"bad user": 1}
    assert report.lines()[-1] == (
        "users (from conversations.owner, memories.user_id, messages.user_id): 42 2, alice 3, bob 4, carol 2"
    )
    again = await migrate(engine, Scope("legacy", "carol"), legacy)
    assert again.tables["conversations"].present == 4 and again.tables["messages"].imported == 0


@pytest.mark.anyio
async def test_all_rows_to_one_user_on_request(engine: Engine, tmp_path: Path) -> None:
    legacy = tmp_path / "multi.db"
    build_multi_user(legacy)
    report = await migrate(engine, Scope("legacy", "carol"), legacy, keep_users=False)
    page = await engine.list(Kind.CONVERSATION, Scope("legacy", "carol"), ListQuery(limit=100))
    assert len(page.items) == 4
    assert report.lines()[-1] == "users: every row to carol (--all-to-user): carol 12"


def test_command_all_to_user(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    legacy = tmp_path / "multi.db"
    build_multi_user(legacy)
    settings = Settings(store=StoreSettings(path=tmp_path / "data"))
    args = argparse.Namespace(path=str(legacy), context="legacy", user="carol", all_to_user=True)
    assert migrate_sqlite(args, settings) == 0
    assert "users: every row to carol (--all-to-user): carol 12" in capsys.readouterr().out
