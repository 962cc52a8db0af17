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
