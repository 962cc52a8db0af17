"""Group commit on the embedded engine: write batches that queue while a commit is in flight share
one transaction and one commit; each keeps its own all-or-nothing outcome.

To make the queue deterministic the tests hold SQLite's write lock from a second connection (as
another process would): the engine's first batch waits for it, and the others queue up behind.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from store.api.store import Store
from store.engine import ClaimStep, CreateStep, Step
from store.errors import LeaseHeld
from store.models import Kind, Message
from store.sqlite.engine import DB_FILE, EmbeddedEngine
from tests.store.conftest import ALICE

pytestmark = pytest.mark.anyio


class WriteLockHolder:
    """Another connection holding the database's write lock until :meth:`release`."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


async def test_batches_queued_behind_a_commit_share_the_next_one(tmp_path: Path) -> None:
    async with EmbeddedEngine(tmp_path) as engine, Store(engine) as store:
        conv = await store.conversations.create(ALICE, "group", channel="cli")
        stats = engine.commit_stats()
        assert stats is not None
        before = (stats.commits, stats.batches, stats.fsyncs)
        holder = WriteLockHolder(tmp_path / DB_FILE)
        stored: list[Message] = []

        async def append(i: int) -> None:
            msg = Message(conversation_id=conv.sid, role="user", content=f"m{i}", channel="cli")
            stored.append(await store.messages.append(ALICE, msg))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(append, i)
                await anyio.wait_all_tasks_blocked()  # every append is queued or waiting for the lock
                await anyio.to_thread.run_sync(holder.release)
        # the worker took the first batch (alone, or with those already queued) and waited for the
        # lock; all the others queued behind it meanwhile and share the next commit
        commits = stats.commits - before[0]
        assert commits in (1, 2) and stats.batches - before[1] == 20
        assert stats.fsyncs - before[2] == commits  # synchronous=FULL: one fsync per commit
        assert sorted(m.seq for m in stored) == list(range(1, 21))
        history = await store.messages.history(ALICE, conv.sid, limit=50)
        assert [(m.seq, m.content) for m in history] == sorted((m.seq, m.content) for m in stored)
        assert (await store.conversations.get(ALICE, conv.sid)).message_count == 20


async def test_a_failing_batch_in_a_group_undoes_only_its_own_writes(tmp_path: Path) -> None:
    async with EmbeddedEngine(tmp_path) as engine, Store(engine) as store:
        conv = await store.conversations.create(ALICE, "group", channel="cli")
        await engine.claim(ALICE, "lease:taken", "someone-else", 60_000)
        stats = engine.commit_stats()
        assert stats is not None
        commits = stats.commits
        holder = WriteLockHolder(tmp_path / DB_FILE)
        outcomes: dict[str, object] = {}

        async def run(name: str, refused: bool) -> None:
            msg = Message(conversation_id=conv.sid, role="user", content=name, channel="cli")
            steps: list[Step] = [CreateStep(Kind.MESSAGE, store.rules.message_fields(msg))]
            if refused:  # a required claim another holder has: the whole batch is refused
                steps.append(ClaimStep("lease:taken", "me", 60_000))
            try:
                outcomes[name] = await engine.batch(ALICE, steps)
            except LeaseHeld as exc:
                outcomes[name] = exc

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "first", False)
                await anyio.wait_all_tasks_blocked()
                for name, refused in (("a", False), ("bad", True), ("b", False)):
                    tg.start_soon(run, name, refused)
                await anyio.wait_all_tasks_blocked()
                await anyio.to_thread.run_sync(holder.release)
        assert isinstance(outcomes["bad"], LeaseHeld)
        # "first" (alone, unless the others came before the worker took it), then a, bad and b
        assert stats.commits - commits in (1, 2)
        contents = [m.content for m in await store.messages.history(ALICE, conv.sid, limit=50)]
        assert contents == ["first", "a", "b"]
        # the refused batch's message left no trace, and the seqs stayed gap-free
        assert [m.seq for m in await store.messages.history(ALICE, conv.sid, limit=50)] == [1, 2, 3]
        assert (await store.conversations.get(ALICE, conv.sid)).message_count == 3


def test_worker_answers_nobody_before_the_commit_returns(tmp_path: Path) -> None:
    """While another connection holds the write lock, a queued write is not answered: acknowledging
    it before its commit would be acknowledging a write that may never happen."""

    async def main() -> None:
        async with EmbeddedEngine(tmp_path, busy_timeout_s=10) as engine, Store(engine) as store:
            conv = await store.conversations.create(ALICE, "group", channel="cli")
            holder = WriteLockHolder(tmp_path / DB_FILE)
            answered = threading.Event()

            async def append() -> None:
                await store.messages.append(
                    ALICE, Message(conversation_id=conv.sid, role="user", content="x", channel="cli")
                )
                answered.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(append)
                await anyio.wait_all_tasks_blocked()
                with anyio.move_on_after(0.3):
                    while not answered.is_set():
                        await anyio.sleep(0.01)
                assert not answered.is_set()
                await anyio.to_thread.run_sync(holder.release)
            assert answered.is_set()

    anyio.run(main)


async def test_each_task_reads_the_worker_side_of_its_own_last_call(tmp_path: Path) -> None:
    """``last_call_seconds``: the worker's side of the calling task's last call (queued, running,
    committing; a bench tells it from the event loop's delay), per task, within the whole call."""
    async with EmbeddedEngine(tmp_path) as engine, Store(engine) as store:
        conv = await store.conversations.create(ALICE, "timed", channel="cli")
        holder = WriteLockHolder(tmp_path / DB_FILE)
        seen: dict[str, tuple[float, float]] = {}

        async def append(name: str) -> None:
            started = anyio.current_time()
            await store.messages.append(
                ALICE, Message(conversation_id=conv.sid, role="user", content=name, channel="cli")
            )
            seen[name] = (EmbeddedEngine.last_call_seconds(), anyio.current_time() - started)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(append, "waits for the lock")
                await anyio.wait_all_tasks_blocked()
                await anyio.to_thread.run_sync(holder.release)
            await append("alone")
        for worker, whole in seen.values():
            assert 0 < worker <= whole
        # this task's last call was "alone" (the other task's value is that task's own)
        assert EmbeddedEngine.last_call_seconds() == seen["alone"][0]


def test_an_early_answer_whose_commit_fails_fails_its_durability_and_keeps_nothing(tmp_path: Path) -> None:
    """``batch_early`` answers before the COMMIT; a COMMIT that then fails (here: the file-size limit,
    a real EFBIG from the kernel) fails the durability future, and nothing of the batch exists."""
    child = Path(__file__).with_name("early_commit_child.py")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(child), str(tmp_path)],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("results ")  # the results came although the commit then failed
    assert lines[1].startswith("durable failed: the embedded store at ")
    assert lines[2:] == ["absent", "next ok", "early 1 failed 1"]
