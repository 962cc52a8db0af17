"""Leases of the embedded engine: expiring turn locks and de-duplication marks (``leases`` table).

``claim_in``/``release_in`` run inside the caller's transaction (a :func:`~store.sqlite.batch.batch`,
which skips the fsync when it writes nothing but expiring leases: de-duplication marks, which never
expire, stay fully durable). Each lease row carries its holder's process identity (``owner_host``,
``owner_pid``, ``owner_started``; see :mod:`store.leases`) so that a claimer on the same host can tell
a dead holder and take its lease over with ``replace``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from store.engine import ClaimStep
from store.leases import Claimed, Lease, LeaseOwner
from store.models import Scope
from store.sqlite.ops import now_ms


@contextmanager
def unsynced(conn: sqlite3.Connection, enabled: bool = True, level: int | None = None) -> Iterator[None]:
    """Commit without fsync: for expiring leases only.

    A turn lease lost to a power cut is harmless (it would have expired, and its holder is gone too),
    so its two commits per turn skip the fsync. WAL keeps the database consistent either way; later
    synced commits make these frames durable as well. ``level``: the connection's ``synchronous``
    setting when the caller knows it (read from the connection otherwise).
    """
    if not enabled:
        yield
        return
    if level is None:
        (level,) = conn.execute("PRAGMA synchronous").fetchone()
    if level <= 1:
        yield
        return
    conn.execute("PRAGMA synchronous = OFF")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA synchronous = {int(level)}")


def claim_in(conn: sqlite3.Connection, scope: Scope, step: ClaimStep) -> Claimed:
    key, holder, ttl_ms, owner, replace = step.key, step.holder, step.ttl_ms, step.owner, step.replace
    now = now_ms()
    row = conn.execute(
        "SELECT holder, expires_at FROM leases WHERE context = ? AND user_id = ? AND key = ?",
        (scope.context, scope.user_id, key),
    ).fetchone()
    if row is None:
        outcome = Claimed.TAKEN
    elif row[0] == holder:
        outcome = Claimed.RENEWED
    elif row[1] is not None and row[1] <= now:
        outcome = Claimed.LAPSED
    elif replace is not None and row[0] == replace:
        outcome = Claimed.REPLACED
    else:
        return Claimed.REFUSED
    conn.execute(
        "INSERT OR REPLACE INTO leases (context, user_id, key, holder, expires_at, owner_host, owner_pid, "
        "owner_started) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            scope.context,
            scope.user_id,
            key,
            holder,
            None if ttl_ms is None else now + int(ttl_ms),
            owner.host if owner else None,
            owner.pid if owner else None,
            owner.started if owner else None,
        ),
    )
    return outcome


def release_in(conn: sqlite3.Connection, scope: Scope, key: str, holder: str) -> None:
    conn.execute(
        "DELETE FROM leases WHERE context = ? AND user_id = ? AND key = ? AND holder = ?",
        (scope.context, scope.user_id, key, holder),
    )


_COLUMNS = "user_id, key, holder, expires_at, owner_host, owner_pid, owner_started"


def get_lease(conn: sqlite3.Connection, scope: Scope, key: str) -> Lease | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM leases WHERE context = ? AND user_id = ? AND key = ?",
        (scope.context, scope.user_id, key),
    ).fetchone()
    return None if row is None else _lease(row, now_ms())


def list_leases(conn: sqlite3.Connection, context: str, prefix: str) -> list[Lease]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM leases WHERE context = ? AND substr(key, 1, ?) = ? ORDER BY user_id, key",
        (context, len(prefix), prefix),
    ).fetchall()
    now = now_ms()
    return [_lease(row, now) for row in rows]


def _lease(row: tuple[object, ...], now: int) -> Lease:
    user_id, key, holder, expires_at, host, pid, started = row
    owner = LeaseOwner.from_json({"host": host, "pid": pid, "started": started})
    expires_in = None if expires_at is None else int(str(expires_at)) - now
    return Lease(str(user_id), str(key), str(holder), owner, expires_in)
