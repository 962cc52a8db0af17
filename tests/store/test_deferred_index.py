"""Messages full-text indexed after the transaction that stored them (schema 4): a search still sees
every message, pending rows are indexed when the store's thread is idle, an update or delete of a row
pending or indexed leaves the index right, a data dir left with pending rows is indexed by the next
process, and a data dir of schema 3 (made by the code before, main at 1de97c0) upgrades in place."""

from __future__ import annotations

import gzip
import sqlite3
from pathlib import Path

import anyio
import pytest

from store.engine import ListQuery, ListStep
from store.models import Kind, Scope
from store.sqlite import batch as sqlite_batch
from store.sqlite import ops
from store.sqlite.engine import DB_FILE, IDLE_BATCH, IDLE_CAP, EmbeddedEngine
from store.sqlite.schema import SCHEMA_VERSION, TABLES, configure, migrate
from tests.waiting import until

pytestmark = pytest.mark.anyio

ALICE = Scope("default", "alice")

#: A data dir written by main at 1de97c0 (schema 3: messages indexed by their insert trigger), one
#: gzipped database file: a conversation "fruit" with the messages "apples are red", "bananas are
#: yellow", "cherries are dark red" and "a plain line", and the memory "alice likes apples". Remade
#: with ``git worktree add --detach OLD 1de97c0`` and, in OLD, a script that writes those through
#: ``Store(EmbeddedEngine(dir))`` (``store.conversations.create``, ``store.messages.append``,
#: ``engine.create(Kind.MEMORY, ...)``), checkpoints, and gzips ``hero-agent.db``.
V3_DB = Path(__file__).parent / "data" / "schema_v3.db.gz"


def pending(path: Path) -> list[int]:
    """The rows waiting for their indexing, read through a connection of its own."""
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM messages_fts_pending ORDER BY id")]


def search(conn: sqlite3.Connection, text: str) -> list[str]:
    """A search of messages as the engine runs it (``batch``: the pending rows indexed first)."""
    step = ListStep(Kind.MESSAGE, ListQuery(text=text))
    return sorted(str(r["content"]) for r in sqlite_batch.batch(conn, ALICE, [step]).of(step).items)


def raw_store(path: Path) -> sqlite3.Connection:
    """The store's schema on a plain connection: the functions the worker runs, without the worker
    (so nothing is indexed while idle)."""
    conn = sqlite3.connect(path, isolation_level=None)
    configure(conn, 5000)
    migrate(conn)
    return conn


def add(conn: sqlite3.Connection, conv: str, text: str) -> dict[str, object]:
    return ops.create(conn, Kind.MESSAGE, ALICE, {"conversation_id": conv, "content": text}, None)


async def test_a_message_is_found_at_once_and_indexed_while_idle(tmp_path: Path) -> None:
    async with EmbeddedEngine(tmp_path) as engine:
        conv = await engine.create(Kind.CONVERSATION, ALICE, {"title": "", "is_archived": False})
        for text in ("the quick brown fox", "a lazy dog", "foxes and dogs"):
            await engine.create(Kind.MESSAGE, ALICE, {"conversation_id": conv["sid"], "content": text})
        found = await engine.list(Kind.MESSAGE, ALICE, ListQuery(text="fox"))
        assert sorted(r["content"] for r in found.items) == ["foxes and dogs", "the quick brown fox"]
        await until(lambda: not pending(tmp_path / DB_FILE), what="the idle indexing")
        stats = engine.commit_stats()
        assert stats is not None and stats.deferred_index
        assert stats.indexed_rows == 3
        assert stats.index_runs_idle + stats.index_runs_search >= 1
        # indexed while idle now: the same search, nothing left to index before it
        runs = stats.index_runs_search
        found = await engine.list(Kind.MESSAGE, ALICE, ListQuery(text="dog"))
        assert sorted(r["content"] for r in found.items) == ["a lazy dog", "foxes and dogs"]
        assert stats.index_runs_search == runs


def test_a_search_indexes_what_is_pending_first(tmp_path: Path) -> None:
    conn = raw_store(tmp_path / DB_FILE)
    with ops.write_txn(conn):
        conv = ops.create(conn, Kind.CONVERSATION, ALICE, {"title": "", "is_archived": False}, None)
        ids = [add(conn, str(conv["sid"]), text)["sid"] for text in ("red apple", "green apple", "pear")]
    assert len(pending(tmp_path / DB_FILE)) == 3 and len(ids) == 3
    assert search(conn, "apple") == ["green apple", "red apple"]
    assert pending(tmp_path / DB_FILE) == []
    conn.close()


def test_updates_and_deletes_of_pending_and_indexed_rows(tmp_path: Path) -> None:
    """A contentless index must be told the exact text it holds to forget a row: a pending row is not
    in it (nothing to forget; indexed later with its latest text), an indexed one is."""
    conn = raw_store(tmp_path / DB_FILE)
    with ops.write_txn(conn):
        conv = str(
            ops.create(conn, Kind.CONVERSATION, ALICE, {"title": "", "is_archived": False}, None)["sid"]
        )
        indexed_a, indexed_b = add(conn, conv, "alpha words"), add(conn, conv, "beta words")
    assert search(conn, "words") == ["alpha words", "beta words"]  # both indexed now
    with ops.write_txn(conn):
        pending_c, pending_d = add(conn, conv, "gamma text"), add(conn, conv, "delta text")
        # pending rows changed and deleted before they were ever indexed
        ops.update(conn, Kind.MESSAGE, ALICE, str(pending_c["sid"]), {"content": "gamma edited"})
        ops.delete(conn, Kind.MESSAGE, ALICE, str(pending_d["sid"]))
        # indexed rows changed and deleted
        ops.update(conn, Kind.MESSAGE, ALICE, str(indexed_a["sid"]), {"content": "alpha edited"})
        ops.delete(conn, Kind.MESSAGE, ALICE, str(indexed_b["sid"]))
    assert len(pending(tmp_path / DB_FILE)) == 1  # gamma only: delta went with its row
    assert search(conn, "edited") == ["alpha edited", "gamma edited"]
    assert search(conn, "words") == []
    assert search(conn, "text") == []
    assert search(conn, "beta") == []
    conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


async def test_rows_left_pending_by_another_process_are_indexed_when_idle(tmp_path: Path) -> None:
    conn = raw_store(tmp_path / DB_FILE)
    with ops.write_txn(conn):
        conv = str(
            ops.create(conn, Kind.CONVERSATION, ALICE, {"title": "", "is_archived": False}, None)["sid"]
        )
        for i in range(40):  # more than one idle run takes
            add(conn, conv, f"left behind {i}")
    conn.close()
    assert len(pending(tmp_path / DB_FILE)) == 40
    async with EmbeddedEngine(tmp_path) as engine:
        await until(lambda: not pending(tmp_path / DB_FILE), what="the idle indexing of 40 rows")
        stats = engine.commit_stats()
        assert stats is not None and stats.indexed_rows == 40 and stats.index_runs_idle >= 2
        found = await engine.list(Kind.MESSAGE, ALICE, ListQuery(text="behind", limit=100))
        assert len(found.items) == 40


async def test_a_schema_3_data_dir_upgrades_in_place(tmp_path: Path) -> None:
    db = tmp_path / DB_FILE
    db.write_bytes(gzip.decompress(V3_DB.read_bytes()))
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (3,)  # as the old code left it
    async with EmbeddedEngine(tmp_path) as engine:
        found = await engine.list(Kind.MESSAGE, ALICE, ListQuery(text="red"))
        assert sorted(r["content"] for r in found.items) == ["apples are red", "cherries are dark red"]
        [conv] = (await engine.list(Kind.CONVERSATION, ALICE, ListQuery())).items
        new = await engine.create(
            Kind.MESSAGE, ALICE, {"conversation_id": conv["sid"], "content": "red wine"}
        )
        assert new["seq"] == 5
        # an old message (indexed by the old trigger) changed and another deleted
        old = {r["content"]: r["sid"] for r in (await engine.list(Kind.MESSAGE, ALICE, ListQuery())).items}
        await engine.update(Kind.MESSAGE, ALICE, old["bananas are yellow"], {"content": "bananas are ripe"})
        assert await engine.delete(Kind.MESSAGE, ALICE, old["apples are red"])
        found = await engine.list(Kind.MESSAGE, ALICE, ListQuery(text="red"))
        assert sorted(r["content"] for r in found.items) == ["cherries are dark red", "red wine"]
        found = await engine.list(Kind.MESSAGE, ALICE, ListQuery(text="ripe"))
        assert [r["content"] for r in found.items] == ["bananas are ripe"]
        assert (await engine.list(Kind.MESSAGE, ALICE, ListQuery(text="yellow"))).items == []
        memories = await engine.list(Kind.MEMORY, ALICE, ListQuery(text="apples"))
        assert [r["content"] for r in memories.items] == ["alice likes apples"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (4,)
        triggers = conn.execute(
            "SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name = 'messages_ai'"
        ).fetchone()
        assert "messages_fts_pending" in triggers[0]  # the old trigger replaced
        conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def test_writes_that_leave_no_gap_keep_the_pending_rows_bounded(tmp_path: Path) -> None:
    """Eight writers at once keep the worker's queue full: it has no idle gap to index in. Once
    IDLE_CAP rows wait, a batch is indexed before the next call all the same."""
    highest = 0
    async with EmbeddedEngine(tmp_path) as engine:
        conv = await engine.create(Kind.CONVERSATION, ALICE, {"title": "", "is_archived": False})

        async def writer(w: int) -> None:
            nonlocal highest
            for i in range(IDLE_CAP // 2):
                await engine.create(
                    Kind.MESSAGE, ALICE, {"conversation_id": conv["sid"], "content": f"{w} {i}"}
                )
                if w == 0 and i % 8 == 0:
                    highest = max(highest, len(pending(tmp_path / DB_FILE)))

        async with anyio.create_task_group() as tg:
            for w in range(8):
                tg.start_soon(writer, w)
        assert highest <= IDLE_CAP + 8 * IDLE_BATCH
        await until(lambda: not pending(tmp_path / DB_FILE), what="the rest indexed while idle")
        stats = engine.commit_stats()
        assert stats is not None and stats.indexed_rows == 4 * IDLE_CAP and stats.unindexed == 0


def test_an_index_run_reads_the_pending_rows_not_the_table(tmp_path: Path) -> None:
    """Each run looks up its pending rows in the table by id; it does not walk the table (which the
    planner chose when it could: every message up to the bound read, at every run)."""
    conn = raw_store(tmp_path / DB_FILE)
    plan = conn.execute("EXPLAIN QUERY PLAN " + ops.index_sql(TABLES[Kind.MESSAGE]), (10,)).fetchall()
    details = [row[3] for row in plan]
    assert details == [
        "SEARCH p USING INTEGER PRIMARY KEY (rowid<?)",
        "SEARCH m USING INTEGER PRIMARY KEY (rowid=?)",
    ]
    conn.close()
