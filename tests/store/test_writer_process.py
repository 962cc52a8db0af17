"""The embedded engine's writer process (``[store] writer = "process"``) when things go wrong: it is
killed (the calls waiting fail, nothing unanswered was written, the next call starts a new one), the
daemon dies (it ends too), the data dir cannot be opened (a clear error, no process left). The
conformance suite runs every engine test on it too (``embedded-process`` in tests/store/engines.py)."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from agent.metrics import commit_lines
from config.logging import configure_logging
from config.settings import LoggingSettings, StoreSettings
from store import EmbeddedEngine, Store, StoreUnavailable
from store.engine import CreateStep, GetStep, ListQuery, ListStep
from store.factory import build_engine
from store.models import Kind, Message
from store.sqlite.engine import DB_FILE
from tests.store.conftest import ALICE
from tests.waiting import until

pytestmark = pytest.mark.anyio


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (ended, not yet reaped by its parent) is gone for our purposes
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_killed_writer_process_fails_the_waiting_calls_and_the_next_call_starts_another(
    tmp_path: Path,
) -> None:
    async with EmbeddedEngine(tmp_path, writer="process") as engine:
        before = await engine.run(ALICE, CreateStep(Kind.STATE, {"key": "before", "value": "1"}))
        pid = engine.writer_pid
        assert pid is not None
        # another connection holds the write lock: the writer's next write waits for it
        holder = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        failed: list[BaseException] = []

        async def write() -> None:
            try:
                await engine.run(ALICE, CreateStep(Kind.STATE, {"key": "lost", "value": "2"}))
            except StoreUnavailable as exc:
                failed.append(exc)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                await until(lambda: engine.backlog() == 1, what="the write waiting in the writer")
                os.kill(pid, signal.SIGKILL)
            holder.execute("COMMIT")
            holder.close()
            assert len(failed) == 1 and "writer process" in str(failed[0])
            # the next calls start ONE new writer process: what was answered is there, the rest is not
            got: list[object] = []

            async def get() -> None:
                got.append(await engine.run(ALICE, GetStep(Kind.STATE, before["sid"])))

            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(get)
            assert got == [before] * 3
            page = await engine.run(ALICE, ListStep(Kind.STATE, ListQuery()))
            assert [r["key"] for r in page.items] == ["before"]
        assert engine.writer_pid not in (None, pid)
        stats = engine.commit_stats()
        assert stats is not None and stats.writer_restarts == 1
        assert 'hero_store_writer_process_restarts_total{engine="embedded"} 1' in commit_lines(
            engine.name, stats
        )
    assert not _alive(pid)


async def test_the_writer_process_ends_when_the_daemon_dies(tmp_path: Path) -> None:
    daemon = subprocess.Popen(
        [sys.executable, "-m", "tests.store.writer_parent_child", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert daemon.stdout is not None
        stdout = daemon.stdout

        def writer_pid() -> int:
            for line in stdout:  # the daemon's log lines come first
                if line.startswith("WRITER "):
                    return int(line.split()[1])
            raise AssertionError("the daemon ended without starting its writer")

        with anyio.fail_after(20):
            writer = await anyio.to_thread.run_sync(writer_pid)
        assert _alive(writer)
        daemon.kill()  # kill -9: no clean-up runs in the daemon
        daemon.wait(10)
        await until(lambda: not _alive(writer), timeout=10, what="the writer process to end")
    finally:
        daemon.kill()
        daemon.wait(10)
        if daemon.stdout is not None:
            daemon.stdout.close()


async def test_a_data_dir_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    engine = EmbeddedEngine(not_a_dir, writer="process")
    with pytest.raises(StoreUnavailable, match="cannot open the embedded store in"):
        await engine.open()
    assert engine.writer_pid is None


async def test_the_writer_process_indexes_messages_in_its_gaps_and_reports_it(tmp_path: Path) -> None:
    async with EmbeddedEngine(tmp_path, writer="process") as engine, Store(engine) as store:
        conv = await store.conversations.create(ALICE, "t", channel="cli")
        for i in range(3):
            await store.messages.append(
                ALICE, Message(conversation_id=conv.sid, role="user", content=f"kiwi {i}", channel="cli")
            )
        stats = engine.commit_stats()
        assert stats is not None
        # the counters come from the writer process, which indexes once it has been idle a while
        await until(lambda: stats.indexed_rows >= 3, what="the messages indexed in the writer's gaps")
        assert stats.index_runs_idle >= 1 and stats.unindexed == 0
        assert stats.commits >= 4 and stats.fsyncs >= 4
        found = await store.messages.search(ALICE, "kiwi")
        assert sorted(m.content for m in found) == ["kiwi 0", "kiwi 1", "kiwi 2"]


async def test_the_setting_chooses_the_writer(tmp_path: Path) -> None:
    engine = build_engine(StoreSettings(path=tmp_path, writer="process"))
    assert isinstance(engine, EmbeddedEngine) and engine.writer == "process"
    async with engine:
        assert engine.writer_pid is not None and _alive(engine.writer_pid)
    # "auto", the default: the daemon's gets the writer process, every other command's the thread
    assert build_engine(StoreSettings(path=tmp_path)).writer == "thread"  # type: ignore[attr-defined]
    assert build_engine(StoreSettings(path=tmp_path), daemon=True).writer == "process"  # type: ignore[attr-defined]
    assert build_engine(StoreSettings(path=tmp_path, writer="thread"), daemon=True).writer == "thread"  # type: ignore[attr-defined]


def test_an_unknown_writer_is_refused() -> None:
    with pytest.raises(ValueError, match="writer must be one of thread, process"):
        EmbeddedEngine(Path("/nonexistent"), writer="fork")


async def test_a_stop_signal_to_every_process_leaves_the_writer_to_its_daemon(tmp_path: Path) -> None:
    """A service manager's stop (SIGTERM) or a Ctrl-C (SIGINT) reaches the writer process too; it
    goes on serving the daemon, which may still be storing while it shuts down."""
    async with EmbeddedEngine(tmp_path, writer="process") as engine:
        pid = engine.writer_pid
        assert pid is not None
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            os.kill(pid, number)
        created = await engine.run(ALICE, CreateStep(Kind.STATE, {"key": "after", "value": "1"}))
        assert await engine.run(ALICE, GetStep(Kind.STATE, created["sid"])) == created
        assert engine.writer_pid == pid and _alive(pid)
        stats = engine.commit_stats()
        assert stats is not None and stats.writer_restarts == 0
    await until(lambda: not _alive(pid), timeout=10, what="the writer to end with its engine")


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_the_writer_process_logs_as_its_daemon_does(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], fmt: str
) -> None:
    """Its lines go to the stderr it inherited, at the daemon's level and in its format, each with
    ``process="store-writer"``; below the level it writes nothing."""
    configure_logging(LoggingSettings(level="debug", format=fmt), stream=io.StringIO())
    try:
        async with EmbeddedEngine(tmp_path, writer="process") as engine:
            pid = engine.writer_pid
        err = capfd.readouterr().err
        started = [line for line in err.splitlines() if "store.writer_process_started" in line]
        assert len(started) == 1, err
        if fmt == "json":
            fields = json.loads(started[0])
            assert fields["process"] == "store-writer" and fields["pid"] == pid
            assert fields["level"] == "debug"
        else:
            assert "process=store-writer" in started[0] and f"pid={pid}" in started[0]
        configure_logging(LoggingSettings(level="info", format=fmt), stream=io.StringIO())
        async with EmbeddedEngine(tmp_path, writer="process"):
            pass
        assert "store.writer_process_started" not in capfd.readouterr().err
    finally:
        configure_logging(LoggingSettings())
