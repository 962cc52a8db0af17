"""Leases of the embedded engine: expiring turn locks and de-duplication marks (``leases`` table).

``claim_in``/``release_in`` run inside the caller's transaction (a :func:`~store.sqlite.batch.batch`,
which skips the fsync when it writes nothing but expiring leases: de-duplication marks, which never
expire, stay fully durable).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from store.models import Scope
from store.sqlite.ops import now_ms


@contextmanager
def unsynced(conn: sqlite3.Connection, enabled: bool = True) -> Iterator[None]:
    """Commit without fsync: for expiring leases only.

    A turn lease lost to a power cut is harmless (it would have expired, and its holder is gone too),
    so its two commits per turn skip the fsync. WAL keeps the database consistent either way; later
    synced commits make these frames durable as well.
    """
    if not enabled:
        yield
        return
    (level,) = conn.execute("PRAGMA synchronous").fetchone()
    if level <= 1:
        yield
        return
    conn.execute("PRAGMA synchronous = OFF")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA synchronous = {int(level)}")


def claim_in(conn: sqlite3.Connection, scope: Scope, key: str, holder: str, ttl_ms: int | None) -> bool:
    now = now_ms()
    row = conn.execute(
        "SELECT holder, expires_at FROM leases WHERE context = ? AND user_id = ? AND key = ?",
        (scope.context, scope.user_id, key),
    ).fetchone()
    if row is not None and row[0] != holder and (row[1] is None or row[1] > now):
        return False
    conn.execute(
        "INSERT OR REPLACE INTO leases (context, user_id, key, holder, expires_at) VALUES (?, ?, ?, ?, ?)",
        (scope.context, scope.user_id, key, holder, None if ttl_ms is None else now + int(ttl_ms)),
    )
    return True


def release_in(conn: sqlite3.Connection, scope: Scope, key: str, holder: str) -> None:
    conn.execute(
        "DELETE FROM leases WHERE context = ? AND user_id = ? AND key = ? AND holder = ?",
        (scope.context, scope.user_id, key, holder),
    )
