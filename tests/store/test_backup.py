"""``hero-agent backup``: a consistent copy of the embedded store taken while another process keeps
writing, restorable as documented (a data dir holding only the copy opens and reads whole)."""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from store.sqlite.engine import DB_FILE
from tests.store.test_durability import _acks, _all_messages, _integrity, _new_conversation, _spawn
from tests.waiting import until_sync

pytestmark = [pytest.mark.durability, pytest.mark.timeout(180)]

SCRIPT = Path(sys.executable).parent / "hero-agent"


def backup(data_dir: Path, target: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERO_AGENT_", "OSIS_"))}
    env.update(
        HERO_AGENT_DATA_DIR=str(data_dir), HOME=str(data_dir.parent), XDG_CONFIG_HOME=str(data_dir.parent)
    )
    return subprocess.run(
        [str(SCRIPT), "backup", str(target)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


class AckReader:
    """Reads the writer's acknowledgements in a thread, so the test can sample the count at any time."""

    def __init__(self, child: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(child,), daemon=True)
        self.thread.start()

    def _read(self, child: subprocess.Popen[str]) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            self.lines.append(line)

    def acked(self) -> int:
        return len(_acks(list(self.lines)))


def restored(copy: Path, tmp: Path, name: str) -> Path:
    """The documented restore: a data directory holding only the backup, named hero-agent.db."""
    data = tmp / f"restored-{name}"
    data.mkdir()
    shutil.copyfile(copy, data / DB_FILE)
    return data


def test_backups_taken_while_a_writer_runs_are_consistent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    conv = anyio.run(_new_conversation, data)
    child = _spawn(data, conv, "m", 100_000)
    reader = AckReader(child)
    taken: list[tuple[Path, int, int]] = []
    try:

        def busy(n: int) -> bool:
            if reader.acked() >= n:
                return True
            assert child.poll() is None, "the writer stopped"
            return False

        for i in range(4):
            # the writer is busy before each backup
            until_sync(functools.partial(busy, 50 * (i + 1)), timeout=60, what=f"{50 * (i + 1)} writes")
            before = reader.acked()
            target = tmp_path / f"copy-{i}.db"
            done = backup(data, target)
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith(f"backed up {data} to {target} (")
            taken.append((target, before, reader.acked()))
        assert child.poll() is None  # it wrote all along
    finally:
        child.kill()
        child.wait(10)
        reader.thread.join(10)
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
    for i, (copy, before, after) in enumerate(taken):
        _integrity(copy)
        assert not Path(f"{copy}-wal").exists()
        conn = sqlite3.connect(copy)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        finally:
            conn.close()
        messages, count = anyio.run(_all_messages, restored(copy, tmp_path, str(i)), conv)
        # a snapshot: a gap-free prefix of what was written, holding every append acknowledged before
        # the backup started (plus at most the ones committed while it ran)
        assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
        assert [m.content for m in messages] == [f"m-{n}" for n in range(len(messages))]
        assert before <= len(messages) <= after + 1 and count == len(messages)


def test_refusals_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "never-used"
    done = backup(empty, tmp_path / "x.db")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"hero-agent backup: error: no embedded store at {empty} (nothing to back up)\n"
    data = tmp_path / "data"
    anyio.run(_new_conversation, data)
    existing = tmp_path / "already.db"
    existing.write_text("keep me")
    done = backup(data, existing)
    assert done.returncode == 1 and "never overwrites" in done.stderr and existing.read_text() == "keep me"
    folder = tmp_path / "backups"
    folder.mkdir()
    done = backup(data, folder)
    assert done.returncode == 0
    (made,) = folder.iterdir()
    assert made.name.startswith("hero-agent-") and made.suffix == ".db"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
