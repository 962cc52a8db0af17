"""``Engine.batch`` on the embedded engine: every step in one SQLite transaction.

:data:`HANDLERS` is this engine's column of the step table (:data:`store.engine.STEPS`): one function
per step type, run on the worker thread inside the batch's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Final

from store import cut_turns
from store.engine import (
    ClaimStep,
    CommitStats,
    CountStep,
    CreateStep,
    DeleteStep,
    GetStep,
    ListStep,
    MarkCutStep,
    ReleaseStep,
    Results,
    Step,
    UpdateStep,
    check_handlers,
    leases_only,
    reads_only,
    settled,
    tail_query,
)
from store.models import Kind, Record, Scope
from store.sqlite import ops
from store.sqlite.leases import claim_in, release_in, unsynced
from store.sqlite.ops import write_txn
from store.sqlite.schema import TABLES

Handler = Callable[[sqlite3.Connection, Scope, Any], object]

HANDLERS: Final[dict[type[Step], Handler]] = {
    GetStep: lambda conn, scope, s: ops.get(conn, s.kind, scope, s.sid),
    ListStep: lambda conn, scope, s: ops.list_records(conn, s.kind, scope, s.query),
    CountStep: lambda conn, scope, s: ops.count(conn, s.kind, scope, s.filters),
    CreateStep: lambda conn, scope, s: ops.create(conn, s.kind, scope, s.fields, s.request_key),
    UpdateStep: lambda conn, scope, s: ops.update(conn, s.kind, scope, s.sid, s.fields),
    DeleteStep: lambda conn, scope, s: ops.delete(conn, s.kind, scope, s.sid),
    ClaimStep: claim_in,
    ReleaseStep: lambda conn, scope, s: release_in(conn, scope, s.key, s.holder),
    MarkCutStep: lambda conn, scope, s: mark_cut(conn, scope, s.conversation_id, s.request_key),
}
check_handlers(HANDLERS, "the embedded engine")


def writes(steps: Sequence[Step]) -> bool:
    """The batch writes: it needs a write transaction (and may join a group commit)."""
    return not all(reads_only(s) for s in steps)


def needs_index(steps: Sequence[Step]) -> bool:
    """A step searches messages, whose full-text indexing may be pending (see :func:`run_steps`)."""
    return any(_indexes_first(s) for s in steps)


def _indexes_first(step: Step) -> bool:
    return isinstance(step, ListStep) and ops.searches_later_indexed(step.kind, step.query)


def run_steps(
    conn: sqlite3.Connection, scope: Scope, steps: Sequence[Step], stats: CommitStats | None = None
) -> Results:
    """Every step, inside the transaction the caller opened (a group commit's savepoint); a batch
    that searches messages first indexes those still pending (counted in ``stats``)."""
    if any(_indexes_first(s) for s in steps):
        indexed = ops.index_pending(conn)
        if stats is not None:
            stats.indexed(indexed, idle=False, all_done=True)
    results = Results(steps, [_step(conn, scope, s) for s in steps])
    if stats is not None:
        stats.unindexed += sum(isinstance(s, CreateStep) and TABLES[s.kind].deferred_fts for s in steps)
    return results


def batch(
    conn: sqlite3.Connection, scope: Scope, steps: Sequence[Step], stats: CommitStats | None = None
) -> Results:
    """Every step in ONE transaction: all done or none (a failure, or a refused required claim, rolls
    the whole batch back). Reads see the batch's own earlier writes. The commit skips the fsync only
    when the batch writes nothing but expiring leases (see :func:`unsynced`). The engine sends write
    batches through its group commit (:mod:`store.sqlite.group`) instead, which gives each the same
    guarantees. A search of messages while some wait for their indexing becomes a write: it indexes
    them first (:func:`run_steps`), committed without an fsync; with none waiting it stays a read (no
    write lock taken)."""
    if not writes(steps):
        if any(_indexes_first(s) for s in steps) and ops.any_pending(conn):
            # the index is derived: its commit needs no fsync (lost to a power cut, the rows are
            # pending again)
            with unsynced(conn), write_txn(conn):
                return run_steps(conn, scope, steps, stats)
        if len(steps) == 1:  # one read is one statement: no transaction to open
            return Results(steps, [_step(conn, scope, steps[0])])
        conn.execute("BEGIN")  # one snapshot for every read
        try:
            return Results(steps, [_step(conn, scope, s) for s in steps])
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
    with unsynced(conn, leases_only(steps)), write_txn(conn):
        return run_steps(conn, scope, steps)


def _step(conn: sqlite3.Connection, scope: Scope, step: Step) -> object:
    return settled(step, HANDLERS[type(step)](conn, scope, step))


def mark_cut(
    conn: sqlite3.Connection, scope: Scope, conversation_id: str, request_key: str | None
) -> list[Record]:
    """:class:`MarkCutStep` inside the caller's transaction."""
    head = ops.list_records(conn, Kind.MESSAGE, scope, tail_query(conversation_id, 1))
    if cut_turns.settled(head.items):
        return []
    tail = ops.list_records(conn, Kind.MESSAGE, scope, tail_query(conversation_id, cut_turns.TAIL))
    own = None
    if request_key is not None:
        row = conn.execute(
            "SELECT sid FROM messages WHERE context = ? AND user_id = ? AND request_key = ?",
            (scope.context, scope.user_id, request_key),
        ).fetchone()
        own = row[0] if row else None
    return [
        ops.create(conn, Kind.MESSAGE, scope, fields, key)
        for fields, key in cut_turns.markers(conversation_id, tail.items, own)
    ]
