"""What is particular to the embedded engine: the file on disk, opening failures, sharing one
connection per process, and ``open_store`` from settings."""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from config.settings import AgentSettings, Settings, StoreSettings
from store.engine import ListQuery
from store.errors import InvalidInput, StoreUnavailable
from store.factory import open_store
from store.leases import this_process
from store.models import Kind, Message
from store.sqlite.engine import DB_FILE, EmbeddedEngine
from store.sqlite.schema import SCHEMA_VERSION, schema_ddl
from tests.store.conftest import ALICE

pytestmark = pytest.mark.anyio


async def test_database_is_wal_and_created_in_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "deep" / "data"
    async with EmbeddedEngine(data_dir) as engine:
        await engine.create(Kind.MEMORY, ALICE, {"content": "x", "hash": "h"})
    conn = sqlite3.connect(data_dir / DB_FILE)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT count(*) FROM memories").fetchone() == (1,)
    finally:
        conn.close()


async def test_unopenable_places_are_unavailable(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="cannot open the embedded store"):
        await EmbeddedEngine(a_file).open()
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / DB_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnavailable, match="not a database"):
        await EmbeddedEngine(garbage).open()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    async with EmbeddedEngine(tmp_path):
        pass
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreUnavailable, match="newer hero-agent"):
        await EmbeddedEngine(tmp_path).open()


async def test_engines_of_one_process_share_the_file_safely(tmp_path: Path) -> None:
    first, second = EmbeddedEngine(tmp_path), EmbeddedEngine(tmp_path)
    await first.open()
    await second.open()
    conv = await first.create(Kind.CONVERSATION, ALICE, {"title": "", "is_archived": False})
    assert await second.get(Kind.CONVERSATION, ALICE, conv["sid"]) == conv
    await first.aclose()
    with pytest.raises(StoreUnavailable):
        await first.get(Kind.CONVERSATION, ALICE, conv["sid"])
    assert await second.get(Kind.CONVERSATION, ALICE, conv["sid"]) == conv
    await second.aclose()


#: children that open each fresh data dir at the same moment, and the fresh data dirs they go through
#: (before the fix, one round in 7-10 failed one of the three openers here)
OPENERS, ROUNDS = 3, 50
#: how far ahead of a round's line its start is set: every child has read it by then
START_AHEAD_S = 0.03


async def test_processes_opening_a_new_data_dir_at_once_all_open_it(tmp_path: Path) -> None:
    """Several processes open one brand-new data dir at the same moment (two daemons started together
    on a new shared data dir): every one of them opens it and writes. While one switches the new file
    to WAL, SQLite answered the others' switch "database is locked" at once, not after the busy
    timeout; before the engine retried that switch, one round in 7-10 failed an opener here (all
    three start together: each waits for the same instant of the monotonic clock)."""
    child = Path(__file__).with_name("open_race_child.py")
    root = Path(__file__).resolve().parents[2]
    names = [f"p{i}" for i in range(OPENERS)]
    procs = [await anyio.open_process([sys.executable, str(child), name], cwd=root) for name in names]
    try:
        with anyio.fail_after(60):
            outs = [BufferedByteReceiveStream(p.stdout) for p in procs if p.stdout is not None]

            async def line(out: BufferedByteReceiveStream) -> str:
                return (await out.receive_until(b"\n", 10_000)).decode()

            assert [await line(out) for out in outs] == ["ready"] * OPENERS
            for r in range(ROUNDS):
                data_dir = tmp_path / f"round-{r}"
                start = time.monotonic() + START_AHEAD_S  # the same instant for every child
                for p in procs:
                    assert p.stdin is not None
                    await p.stdin.send(f"{data_dir} {start}\n".encode())
                answers = [await line(out) for out in outs]
                assert answers == ["ok"] * OPENERS, (r, answers)
                async with EmbeddedEngine(data_dir) as engine:
                    page = await engine.list(Kind.STATE, ALICE, ListQuery(limit=100))
                assert sorted(rec["key"] for rec in page.items) == names
                conn = sqlite3.connect(data_dir / DB_FILE)
                try:
                    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
                finally:
                    conn.close()
            for p in procs:
                assert p.stdin is not None
                await p.stdin.aclose()
            assert [await p.wait() for p in procs] == [0] * OPENERS
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()


async def test_open_store_from_settings(tmp_path: Path) -> None:
    settings = Settings(
        agent=AgentSettings(max_message_chars=10),
        store=StoreSettings(engine="embedded", path=tmp_path / "new" / "dir"),
    )
    async with open_store(settings) as store:
        conv = await store.conversations.create(ALICE, "t")
        await store.messages.append(
            ALICE, Message(conversation_id=conv.sid, role="user", content="x" * 10, channel="cli")
        )
        with pytest.raises(InvalidInput):
            await store.messages.append(
                ALICE, Message(conversation_id=conv.sid, role="user", content="x" * 11, channel="cli")
            )
    assert (tmp_path / "new" / "dir" / DB_FILE).exists()
    with pytest.raises(StoreUnavailable):
        await store.conversations.get(ALICE, conv.sid)


async def test_unknown_engine_name(tmp_path: Path) -> None:
    settings = Settings(store=StoreSettings(engine="mongodb", path=tmp_path))
    with pytest.raises(StoreUnavailable, match="unknown store engine"):
        async with open_store(settings):
            pass


async def test_non_json_values_are_invalid_input(tmp_path: Path) -> None:
    async with EmbeddedEngine(tmp_path) as engine:
        for bad in ({"tool": {1, 2}}, {"tool": "t", "duration_ms": float("nan")}):
            with pytest.raises(InvalidInput):
                await engine.create(Kind.AUDIT, ALICE, bad)
        assert await engine.count(Kind.AUDIT, ALICE) == 0


async def test_fsync_setting_reaches_the_connection(tmp_path: Path) -> None:
    for fsync, expected in ((True, 2), (False, 1)):  # PRAGMA synchronous: 2 = FULL, 1 = NORMAL
        settings = Settings(store=StoreSettings(path=tmp_path / str(fsync), fsync_commits=fsync))
        async with open_store(settings) as store:
            engine = store.engine
            assert isinstance(engine, EmbeddedEngine)
            assert engine.fsync_commits is fsync
            assert engine._db is not None and engine._db.conn is not None
            assert engine._db.conn.execute("PRAGMA synchronous").fetchone() == (expected,)
            stats = engine.commit_stats()
            assert stats is not None
            before = (stats.commits, stats.fsyncs)
            conv = await store.conversations.create(ALICE, "t", channel="cli")
            await store.messages.append(ALICE, Message(conversation_id=conv.sid, role="user", content="x"))
            # the commits count as fsynced exactly when the connection fsyncs them (the level the
            # engine keeps, no longer read from the connection per commit)
            assert (stats.commits - before[0], stats.fsyncs - before[1]) == ((2, 2) if fsync else (2, 0))
            # a write batch that changed no row (an update of a missing record) writes nothing to
            # the log: committed, not fsynced
            assert await store.engine.update(Kind.MEMORY, ALICE, "zzzz", {"content": "x"}) is None
            assert (stats.commits - before[0], stats.fsyncs - before[1]) == ((3, 2) if fsync else (3, 0))


async def test_a_sid_already_taken_is_skipped(tmp_path: Path) -> None:
    """A record may hold the sid the kind's counter hands out next (one restored in a spelling the
    counter never produced, a row written by another tool): the new record takes the number after
    it, and nothing of the failed attempt is left (no FTS entry, seq and count right)."""
    async with EmbeddedEngine(tmp_path) as engine:
        conv = await engine.create(Kind.CONVERSATION, ALICE, {"title": "", "is_archived": False})
        first = await engine.create(Kind.MESSAGE, ALICE, {"conversation_id": conv["sid"], "content": "one"})
        assert first["sid"] == "0001"
        conn = sqlite3.connect(tmp_path / DB_FILE)
        conn.execute(
            "INSERT INTO messages (sid, context, user_id, created_at, updated_at, conversation_id, seq, "
            "data) VALUES ('0002', ?, 'someone', 1, 1, 'elsewhere', 1, '{\"sid\":\"0002\"}')",
            (ALICE.context,),
        )
        conn.commit()
        conn.close()
        second = await engine.create(Kind.MESSAGE, ALICE, {"conversation_id": conv["sid"], "content": "two"})
        assert (second["sid"], second["seq"]) == ("0003", 2)
        assert await engine.get(Kind.MESSAGE, ALICE, "0003") == second
        assert await engine.count(Kind.MESSAGE, ALICE, {"conversation_id": conv["sid"]}) == 2
        found = await engine.list(Kind.MESSAGE, ALICE, ListQuery(text="two"))
        assert [m["sid"] for m in found.items] == ["0003"]
        assert (await engine.get(Kind.CONVERSATION, ALICE, conv["sid"]) or {})["message_count"] == 2


async def test_checkpoint_empties_the_log(tmp_path: Path) -> None:
    async with EmbeddedEngine(tmp_path) as opened:
        engine = opened
        assert isinstance(engine, EmbeddedEngine)
        for i in range(20):
            await engine.create(Kind.MEMORY, ALICE, {"content": f"m{i}", "hash": f"h{i}"})
        assert (tmp_path / f"{DB_FILE}-wal").stat().st_size > 0
        await engine.checkpoint()
        assert (tmp_path / f"{DB_FILE}-wal").stat().st_size == 0
        assert await engine.count(Kind.MEMORY, ALICE) == 20


async def test_a_checkpoint_without_truncate_keeps_the_log_file_for_reuse(tmp_path: Path) -> None:
    wal = tmp_path / f"{DB_FILE}-wal"
    async with EmbeddedEngine(tmp_path) as engine:
        for i in range(20):
            await engine.create(Kind.MEMORY, ALICE, {"content": f"m{i}", "hash": f"h{i}"})
        size = wal.stat().st_size
        await engine.checkpoint(truncate=False)
        await engine.create(Kind.MEMORY, ALICE, {"content": "after", "hash": "after"})
        # the next commit wrote over the start of the log instead of growing it
        assert wal.stat().st_size == size
        assert await engine.count(Kind.MEMORY, ALICE) == 21
    async with EmbeddedEngine(tmp_path) as engine:
        assert await engine.count(Kind.MEMORY, ALICE) == 21


#: the leases table of schema 1 (main at f3ae3be), before the holder's identity columns
SCHEMA_1_LEASES = (
    "CREATE TABLE IF NOT EXISTS leases (context TEXT NOT NULL, user_id TEXT NOT NULL, "
    "key TEXT NOT NULL, holder TEXT NOT NULL, expires_at INTEGER, "
    "PRIMARY KEY (context, user_id, key)) WITHOUT ROWID"
)


async def test_a_schema_1_data_dir_upgrades_in_place(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILE)
    for stmt in schema_ddl():
        conn.execute(SCHEMA_1_LEASES if stmt.startswith("CREATE TABLE IF NOT EXISTS leases") else stmt)
    conn.execute("INSERT INTO leases VALUES ('default', 'alice', 'turn:0001', 'old-holder', 9999999999999)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    async with EmbeddedEngine(tmp_path) as engine:
        old = await engine.get_lease(ALICE, "turn:0001")
        assert old is not None and old.holder == "old-holder" and old.owner is None
        assert not await engine.claim(ALICE, "turn:0001", "new", 5000)  # still held, as before
        me = this_process()
        assert await engine.claim(ALICE, "turn:0001", "new", 5000, owner=me, replace="old-holder")
        lease = await engine.get_lease(ALICE, "turn:0001")
        assert lease is not None and lease.owner == me
    conn = sqlite3.connect(tmp_path / DB_FILE)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
