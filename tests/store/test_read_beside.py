"""The embedded engine's reads beside the writes (``Engine.read``, a turn's memory recall): on a
read-only connection of their own, they answer while the writer is held up, with what is committed.
The writer is held up for real: another connection holds SQLite's write lock on the file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from store import EmbeddedEngine, Store, StoreUnavailable
from store.engine import ListQuery, ListStep
from store.models import Kind
from tests.store.conftest import ALICE
from tests.waiting import until

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_a_read_answers_while_the_writer_waits_for_a_lock(tmp_path: Path, writer: str) -> None:
    engine = EmbeddedEngine(tmp_path, writer=writer)
    async with Store(engine) as store:
        kept, _ = await store.memories.add(ALICE, "Alice likes green tea")
        conn = sqlite3.connect(engine.db_path, isolation_level=None, timeout=5)
        try:
            conn.execute("BEGIN IMMEDIATE")
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.memories.add, ALICE, "written behind the lock")
                try:
                    await until(lambda: engine.backlog() >= 1, what="a write waiting on the writer")
                    with anyio.fail_after(5):  # the lock is held until after these reads
                        matching, recent = await store.memories.recall(ALICE, "green tea", 5, 5)
                        results = await engine.read(ALICE, [step := ListStep(Kind.MEMORY, ListQuery())])
                    assert [m.sid for m in matching] == [kept.sid]
                    assert [m.sid for m in recent] == [kept.sid]  # what is committed, not the queued write
                    assert [r["sid"] for r in results.of(step).items] == [kept.sid]
                    assert engine.backlog() >= 1  # the write still waits
                finally:
                    conn.execute("ROLLBACK")
        finally:
            conn.close()
        assert {m.content for m in (await store.memories.list(ALICE)).items} == {
            "Alice likes green tea",
            "written behind the lock",
        }
        assert engine.backlog() == 0


async def test_a_read_after_close_is_refused(tmp_path: Path) -> None:
    engine = EmbeddedEngine(tmp_path)
    async with engine:
        pass
    with pytest.raises(StoreUnavailable):
        await engine.read(ALICE, [ListStep(Kind.MEMORY, ListQuery())])


@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_a_damaged_record_is_the_store_unavailable_on_either_connection(
    tmp_path: Path, writer: str
) -> None:
    """A stored record that no longer parses (a damaged file) is reported as the store being
    unavailable, through the writer and through the reads' connection alike, and the other records
    are still read."""
    engine = EmbeddedEngine(tmp_path, writer=writer)
    async with Store(engine) as store:
        kept, _ = await store.memories.add(ALICE, "Alice likes green tea")
        damaged, _ = await store.memories.add(ALICE, "Alice plays the cello")
        _damage(engine.db_path, damaged.sid)
        with pytest.raises(StoreUnavailable, match="the embedded store failed: "):
            await store.memories.get(ALICE, damaged.sid)
        with pytest.raises(StoreUnavailable, match="the embedded store failed: "):
            await engine.read(ALICE, [ListStep(Kind.MEMORY, ListQuery())])
        assert (await store.memories.get(ALICE, kept.sid)).content == "Alice likes green tea"


def _damage(db: Path, sid: str) -> None:
    """Overwrite a memory's record with text that is not JSON, as a damaged file would hold (the
    full-text trigger, which reads the record, set aside for that one write and put back)."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=5)
    try:
        [(trigger,)] = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'memories_au'").fetchall()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DROP TRIGGER memories_au")
        conn.execute("UPDATE memories SET data = '{not json' WHERE sid = ?", (sid,))
        conn.execute(trigger)
        conn.execute("COMMIT")
    finally:
        conn.close()
