"""``Engine.batch`` on the postgres engine: every step in ONE transaction, in one round trip when it can.

:data:`HANDLERS` is this engine's column of the step table (:data:`store.engine.STEPS`). Most steps are
a :class:`~store.postgres.ops.Plan` (statements with no client logic between them); a batch made of
plans is sent as one message ``BEGIN; ...; COMMIT`` and read back once: a turn's opening (claim,
cut-turn check, user message, reads) and closing (usage entries, release) are one round trip each.
``UpdateStep`` (merges fields into the stored record) and a ``MarkCutStep`` whose conversation ends in
a cut turn need the client between statements: such a batch runs step by step in one transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection

from store import cut_turns
from store.engine import (
    ClaimStep,
    CountStep,
    CreateStep,
    DeleteStep,
    GetStep,
    ListStep,
    MarkCutStep,
    Page,
    ReleaseStep,
    Results,
    Step,
    UpdateStep,
    check_handlers,
    leases_only,
    reads_only,
    tail_query,
)
from store.errors import InvalidInput, LeaseHeld, NotFound
from store.models import BASE_FIELDS, Kind, Record, Scope
from store.postgres import ops, prepared
from store.postgres.ops import OWNED_FIELDS, Plan, Rows, Statement
from store.postgres.schema import TABLES

Conn = AsyncConnection[Any]


@dataclass(frozen=True, slots=True)
class Handling:
    """How the engine runs one step type: as a plan (all in one message), or by a function of its own (step by
    step, in the batch's transaction); ``plan`` may be a fast path that fails with 'unsettled'."""

    plan: Callable[[Scope, Any], Plan] | None
    interactive: Callable[[Conn, Scope, Any], Awaitable[object]] | None = None


class Unsettled(Exception):
    """The fast path's cut-turn check found work: run the batch step by step."""


async def update_in(conn: Conn, scope: Scope, step: UpdateStep) -> Record | None:
    """Read under a row lock, merge in Python (as the embedded engine does), write back."""
    spec = TABLES[step.kind]
    cur = await conn.execute(
        f"SELECT {spec.select}, id FROM {spec.table} WHERE context = %s AND sid = %s AND user_id = %s "
        "FOR UPDATE",
        (scope.context, step.sid, scope.user_id),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    rec = ops.record(spec, row[:-1])
    owned = OWNED_FIELDS.get(step.kind, frozenset())
    for key, value in step.fields.items():
        if not isinstance(key, str):
            raise InvalidInput(f"invalid field name {key!r}")
        if key not in BASE_FIELDS and key not in owned:
            rec[key] = value
    rec["updated_at"] = max(ops.now_ms(), int(rec["updated_at"]))
    await conn.execute(ops.rewrite_sql(spec), {**ops.row_values(spec, rec), "id": row[-1]})
    return rec


async def mark_cut_in(conn: Conn, scope: Scope, step: MarkCutStep) -> list[Record]:
    """:class:`MarkCutStep` in full (``store.cut_turns``), inside the batch's transaction."""
    tail = await run_plan(
        conn, ops.list_plan(scope, ListStep(Kind.MESSAGE, tail_query(step.conversation_id, 1)))
    )
    assert isinstance(tail, Page)
    if cut_turns.settled(tail.items):
        return []
    query = tail_query(step.conversation_id, cut_turns.TAIL)
    tail = await run_plan(conn, ops.list_plan(scope, ListStep(Kind.MESSAGE, query)))
    assert isinstance(tail, Page)
    own = None
    if step.request_key is not None:
        cur = await conn.execute(
            "SELECT sid FROM messages WHERE context = %s AND user_id = %s AND request_key = %s",
            (scope.context, scope.user_id, step.request_key),
        )
        found = await cur.fetchone()
        own = found[0] if found else None
    out: list[Record] = []
    for fields, key in cut_turns.markers(step.conversation_id, tail.items, own):
        created = await run_plan(conn, ops.create_plan(scope, CreateStep(Kind.MESSAGE, fields, key)))
        assert isinstance(created, dict)
        out.append(created)
    return out


HANDLERS: Final[dict[type[Step], Handling]] = {
    GetStep: Handling(ops.get_plan),
    ListStep: Handling(ops.list_plan),
    CountStep: Handling(ops.count_plan),
    CreateStep: Handling(ops.create_plan),
    UpdateStep: Handling(None, update_in),
    DeleteStep: Handling(ops.delete_plan),
    ClaimStep: Handling(ops.claim_plan),
    ReleaseStep: Handling(ops.release_plan),
    MarkCutStep: Handling(lambda scope, s: ops.settled_guard(scope, s.conversation_id), mark_cut_in),
}
check_handlers(HANDLERS, "the postgres engine")


async def _rows(cur: psycopg.AsyncCursor[Any]) -> Rows:
    return await cur.fetchall() if cur.description is not None else []


async def run_plan(conn: Conn, plan: Plan) -> object:
    """One plan, statement by statement (inside the caller's transaction)."""
    rows = [await _rows(await conn.execute(sql, params)) for sql, params in plan.statements]
    return plan.finish(rows)


def failure(exc: psycopg.Error) -> Exception | None:
    """The outcome a ``hero_fail`` call stands for (None: not one of ours)."""
    message = exc.diag.message_primary or ""
    if not isinstance(exc, psycopg.errors.RaiseException) or not message.startswith("hero:"):
        return None
    _, what, detail = message.split(":", 2)
    if what == "lease-held":
        return LeaseHeld(detail)
    if what == "not-found":
        return NotFound("conversation", detail)
    if what == "unsettled":
        return Unsettled()
    return None


async def pipelined(conn: Conn, scope: Scope, steps: Sequence[Step]) -> Results:
    """Every step a plan: ONE message (BEGIN, the statements, COMMIT), one round trip, read back once."""
    plans = [_fast_plan(scope, s) for s in steps]
    statements: list[Statement] = [s for p in plans for s in p.statements]
    if len(statements) == 1 and all(reads_only(s) for s in steps):
        rows = await _one_message(conn, statements)
    else:
        opening: list[Statement] = [("BEGIN", ())]
        if leases_only(steps) and not all(reads_only(s) for s in steps):
            opening.append(UNSYNCED)
        rows = (await _one_message(conn, [*opening, *statements, ("COMMIT", ())]))[len(opening) : -1]
    out: list[object] = []
    at = 0
    for plan in plans:
        out.append(plan.finish(rows[at : at + len(plan.statements)]))
        at += len(plan.statements)
    return Results(steps, out)


#: a commit that does not wait for its WAL flush, for batches that write nothing but expiring leases
#: (as the embedded engine skips their fsync): a lease write lost to a crash of the server only means
#: that a lease lapses by its time, or that a released one stays until it expires. The WAL is written
#: in order, so a later durable commit makes it durable too, and the database is consistent either way.
UNSYNCED: Final[Statement] = ("SET LOCAL synchronous_commit = off", ())


async def _one_message(conn: Conn, statements: Sequence[Statement]) -> list[Rows]:
    """``statements`` as ONE simple-protocol query: one write, one wake-up of the server, one round
    trip; the rows of each, in order. Each statement runs as a prepared ``EXECUTE`` with its
    parameters quoted by psycopg's client-side binding (:mod:`store.postgres.prepared`: the server
    plans it once per connection, not on every batch); the ``PREPARE``s this connection lacks lead
    the message.

    psycopg's pipeline mode sends each statement in a write of its own, one trip through the event
    loop each, and the server wakes for each: on a busy machine that cost more than the statements.
    The server runs the statements in order and stops at the first that fails (``hero_fail``): with
    the BEGIN in the message, the transaction is then aborted and the caller rolls it back."""
    cur = psycopg.AsyncClientCursor(conn)
    held = prepared.of(conn)
    prepare = True
    for attempt in range(2):
        message = prepared.compose(cur, held, statements, prepare=prepare)
        try:
            await cur.execute(";\n".join([*message.setup, *message.statements]))
            break
        except psycopg.Error as exc:
            again = prepared.failed(held, message, exc.sqlstate)
            if again == "raise" or attempt:
                raise
            # nothing of it committed (the server skips the rest of a message after an error)
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await conn.execute("ROLLBACK")
            prepare = again == "prepared"
    prepared.ran(held, message)
    out: list[Rows] = []
    while True:
        out.append(await _rows(cur))
        if not cur.nextset():
            return out[len(message.setup) :]


def _fast_plan(scope: Scope, step: Step) -> Plan:
    plan = HANDLERS[type(step)].plan
    assert plan is not None
    return plan(scope, step)


def plannable(steps: Sequence[Step]) -> bool:
    return all(HANDLERS[type(s)].plan is not None for s in steps)


async def stepwise(conn: Conn, scope: Scope, steps: Sequence[Step]) -> Results:
    """Step by step in one transaction (a batch with an update, or a cut turn to mark)."""
    out: list[object] = []
    async with conn.transaction():
        for step in steps:
            handling = HANDLERS[type(step)]
            if handling.interactive is not None:
                out.append(await handling.interactive(conn, scope, step))
            else:
                assert handling.plan is not None
                out.append(await run_plan(conn, handling.plan(scope, step)))
    return Results(steps, out)
