"""``Engine.batch`` on the embedded engine: every step in one SQLite transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from store.engine import (
    READ_STEPS,
    ClaimStep,
    CountStep,
    CreateStep,
    DeleteStep,
    GetStep,
    ListStep,
    ReleaseStep,
    Step,
    UpdateStep,
)
from store.errors import LeaseHeld
from store.models import Scope
from store.sqlite import ops
from store.sqlite.leases import claim_in, release_in, unsynced
from store.sqlite.ops import write_txn


def batch(conn: sqlite3.Connection, scope: Scope, steps: Sequence[Step]) -> list[object]:
    """Every step in ONE transaction: all done or none (a failure, or a refused required claim, rolls
    the whole batch back). Reads see the batch's own earlier writes. The commit skips the fsync only
    when the batch writes nothing but expiring leases (see :func:`unsynced`)."""
    writes = [s for s in steps if not isinstance(s, READ_STEPS)]
    if not writes:
        conn.execute("BEGIN")  # one snapshot for every read
        try:
            return [_step(conn, scope, s) for s in steps]
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
    leases_only = all(
        isinstance(s, ReleaseStep) or (isinstance(s, ClaimStep) and s.ttl_ms is not None) for s in writes
    )
    with unsynced(conn, leases_only), write_txn(conn):
        return [_step(conn, scope, s) for s in steps]


def _step(conn: sqlite3.Connection, scope: Scope, step: Step) -> object:
    match step:
        case GetStep(kind, sid):
            return ops.get(conn, kind, scope, sid)
        case ListStep(kind, query):
            return ops.list_records(conn, kind, scope, query)
        case CountStep(kind, filters):
            return ops.count(conn, kind, scope, filters)
        case CreateStep(kind, fields, request_key):
            return ops.create(conn, kind, scope, fields, request_key)
        case UpdateStep(kind, sid, fields):
            return ops.update(conn, kind, scope, sid, fields)
        case DeleteStep(kind, sid):
            return ops.delete(conn, kind, scope, sid)
        case ClaimStep(key, holder, ttl_ms, required):
            taken = claim_in(conn, scope, key, holder, ttl_ms)
            if required and not taken:
                raise LeaseHeld(key)
            return taken
        case ReleaseStep(key, holder):
            release_in(conn, scope, key, holder)
            return None
    raise TypeError(f"not a batch step: {step!r}")
