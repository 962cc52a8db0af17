"""A consistent copy of a running embedded store: SQLite's online backup API.

The daemon may keep writing meanwhile. The copy is taken in one backup step, which reads the
database as one snapshot under a read transaction; in WAL mode that does not block the writers, and
every transaction committed before the snapshot is in the copy, none after it (a copy made page by
page with ``cp`` could mix both). The copy is then switched to a self-contained single file (rollback
journal, no ``-wal``), checked with ``PRAGMA integrity_check``, flushed to disk and renamed into place,
so a backup file that exists is complete. See docs/operations.md for restoring one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from store.errors import StoreUnavailable
from store.sqlite.engine import DB_FILE


@dataclass(frozen=True, slots=True)
class BackupReport:
    path: Path
    bytes: int
    seconds: float


def backup_target(path: Path) -> Path:
    """``path`` itself, or a time-stamped file inside it when it is a directory."""
    if path.is_dir():
        return path / time.strftime("hero-agent-%Y%m%d-%H%M%S.db")
    return path


def backup_embedded(data_dir: Path, target: Path, *, busy_timeout_s: float = 10.0) -> BackupReport:
    """Copy ``<data_dir>/hero-agent.db`` to ``target`` (which must not exist). Blocking: run it in a
    thread when an event loop is busy. Raises StoreUnavailable with one line on any failure."""
    source = data_dir / DB_FILE
    if not source.is_file():
        raise StoreUnavailable(f"no embedded store at {data_dir} (nothing to back up)")
    if target.exists():
        raise StoreUnavailable(f"{target} exists: name a new file (a backup never overwrites)")
    started = time.perf_counter()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    try:
        _copy(source, Path(tmp), busy_timeout_s)
        _fsync(Path(tmp))
        os.replace(tmp, target)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"backup of {source} failed: {exc}") from None
    except OSError as exc:
        raise StoreUnavailable(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return BackupReport(target, target.stat().st_size, time.perf_counter() - started)


def _copy(source: Path, tmp: Path, busy_timeout_s: float) -> None:
    # not mode=ro: a read-only connection cannot create the -shm of a WAL database nobody has open
    src = sqlite3.connect(source, timeout=busy_timeout_s)
    try:
        src.execute("PRAGMA query_only=1")
        dst = sqlite3.connect(tmp, isolation_level=None)
        try:
            src.backup(dst, pages=-1)  # one step: one snapshot, never restarted by concurrent writes
            dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
            (verdict,) = dst.execute("PRAGMA integrity_check").fetchone()
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"the copy failed its integrity check: {verdict}")
        finally:
            dst.close()
    finally:
        src.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
