"""Group commit: the write batches that queued up while a commit was in flight, in ONE transaction.

With ``synchronous=FULL`` every commit waits for an fsync of the log (0.2-2 ms on this kind of disk,
far more on a busy one), and the engine's single worker thread runs one call at a time: 200 turns
starting at once used to queue for 200+ fsyncs in a row. The worker now takes every write batch that
is already waiting when it picks one up (:data:`MAX_GROUP` at most, in arrival order) and runs them
as one transaction::

    BEGIN IMMEDIATE
      SAVEPOINT b; batch 1; RELEASE b        -- a failing batch: ROLLBACK TO b; RELEASE b
      SAVEPOINT b; batch 2; RELEASE b           (only its own writes are undone)
      ...
    COMMIT                                   -- one fsync for all of them

Each batch keeps what it had alone: its writes all or none, its reads see its own writes and those of
the batches before it (as they would have in turn). No caller is answered before the COMMIT has
returned, i.e. before its data is durable; when the COMMIT fails, every batch of the group fails with
it and nothing is acknowledged. The one exception asks for it: a batch sent with
``Engine.batch_early`` (a turn's opening) gets its results as soon as it ran (its savepoint released,
before the batches behind it in the group and before the COMMIT) and its durability after the COMMIT,
as two answers; its caller acknowledges nothing before the second.

Batches arriving during a commit form the next group, so groups grow
exactly when the disk is the bottleneck and stay single when it is not (no waiting for company).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store.engine import CommitStats
from store.errors import Conflict, StoreError, StoreUnavailable
from store.sqlite.leases import unsynced

#: the most batches one group commit takes (a bound on one transaction's size and time)
MAX_GROUP = 64

#: a batch's result or its error
Outcome = tuple[Any, BaseException | None]


@dataclass(frozen=True, slots=True)
class Write:
    """One write batch waiting for a group: ``run(conn)`` does its steps inside the open transaction."""

    run: Callable[[sqlite3.Connection], Any]
    #: it writes nothing but expiring leases (a group of only such batches skips the fsync)
    leases_only: bool
    #: its caller takes the results before the COMMIT (``Engine.batch_early``), its durability after
    early: bool = False


#: called with a write's index and outcome as soon as it ran (inside the transaction, before COMMIT)
Ran = Callable[[int, Outcome], None]


def commit_group(
    conn: sqlite3.Connection,
    path: Path,
    writes: Sequence[Write],
    stats: CommitStats,
    ran: Ran | None = None,
    *,
    level: int,
) -> list[Outcome]:
    """Run ``writes`` in one transaction and commit it once; one outcome per write, in order.
    ``ran(i, outcome)`` is called for each write as soon as it ran (its savepoint released or rolled
    back), before the COMMIT: the early answers of ``Engine.batch_early``, which then wait for neither
    the writes behind them in the group nor the fsync. A COMMIT that then fails fails every write (the
    returned outcomes). ``level`` is the connection's ``synchronous`` setting (2: FULL, every commit
    fsynced), which the engine set when it opened it: known, not read again per group."""
    leases_only = all(w.leases_only for w in writes)
    early = 0
    changes = conn.total_changes  # a group that changed no row writes nothing to the log: no fsync

    def ran_one(i: int, outcome: Outcome) -> None:
        nonlocal early
        if ran is not None:
            ran(i, outcome)
        if writes[i].early and outcome[1] is None:
            early += 1

    try:
        with unsynced(conn, leases_only, level):
            outcomes = _run(conn, path, writes, ran_one)
            committed = any(error is None for _, error in outcomes)
            if conn.in_transaction:
                conn.execute("COMMIT" if committed else "ROLLBACK")
    except BaseException as exc:  # BEGIN or COMMIT failed, or the transaction was lost midway
        with contextlib.suppress(sqlite3.Error):  # the worker thread must live on to answer the rest
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        stats.early += early
        stats.early_failed += early
        stats.grouped(len(writes), committed=False, synced=False)
        error = store_error(exc, path)
        return [(None, error) for _ in writes]
    stats.early += early
    wrote = conn.total_changes != changes
    stats.grouped(
        len(writes), committed=committed, synced=committed and wrote and not leases_only and level >= 2
    )
    return outcomes


def _run(conn: sqlite3.Connection, path: Path, writes: Sequence[Write], ran: Ran) -> list[Outcome]:
    conn.execute("BEGIN IMMEDIATE")
    if len(writes) == 1:  # alone: the transaction is the batch's, no savepoint needed
        try:
            outcome: Outcome = (writes[0].run(conn), None)
        except BaseException as exc:
            if not conn.in_transaction:
                raise
            conn.execute("ROLLBACK")
            return [(None, store_error(exc, path))]
        ran(0, outcome)
        return [outcome]
    out: list[Outcome] = []
    for i, write in enumerate(writes):
        conn.execute("SAVEPOINT batch")
        try:
            result = write.run(conn)
        except BaseException as exc:
            if not conn.in_transaction:
                raise  # SQLite rolled the whole transaction back (disk full, I/O error): all fail
            conn.execute("ROLLBACK TO batch")
            conn.execute("RELEASE batch")
            outcome = (None, store_error(exc, path))
        else:
            conn.execute("RELEASE batch")
            outcome = (result, None)
        out.append(outcome)
        ran(i, outcome)
    return out


def store_error(exc: BaseException, path: Path) -> BaseException:
    """The error a caller gets, as a single call on the connection would have raised it."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.IntegrityError):
        return Conflict(f"conflicting write: {exc}")
    if isinstance(exc, sqlite3.Error):
        return StoreUnavailable(f"the embedded store at {path} failed: {exc}")
    if isinstance(exc, ValueError):  # a stored record that no longer parses as JSON
        return StoreUnavailable(f"the embedded store failed: {exc}")
    return exc
