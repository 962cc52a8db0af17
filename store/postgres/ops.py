"""The postgres engine's steps as *plans*: statements that need no client logic between them.

A :class:`Plan` is a list of SQL statements with their parameters plus a ``finish`` that turns their
rows into the step's result. Because no statement depends on a value the client must read first, the
statements of every step of a batch can be sent as ONE message (one round trip, one transaction);
see :mod:`store.postgres.batch`. The server does what SQLite's engine does in Python: numbers the
message (a row lock on its conversation orders concurrent appends, then ``max(seq) + 1`` in the next
statement, which sees every committed message), allocates the sid (``counters`` row, ``hero_sid``),
honours request keys, compares-and-swaps leases by the server's clock.

A condition that must stop the batch (a missing conversation, a refused required claim, a cut turn
the fast path cannot mark) calls ``hero_fail``: the statement fails, the rest of the message is
skipped and its transaction aborted, and :mod:`store.postgres.batch` turns the error into the step's
outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from store import jsontext
from store.engine import (
    ClaimStep,
    CountStep,
    CreateStep,
    DeleteStep,
    GetStep,
    ListStep,
    Page,
    ReleaseStep,
    check_limit,
)
from store.errors import InvalidInput
from store.leases import Claimed, Lease, LeaseOwner
from store.models import BASE_FIELDS, Kind, Record, Scope
from store.postgres.query import add_filters, order_expr, scoped, ts_query
from store.postgres.schema import CASCADE_TABLES, TABLES, PgTable
from store.sql import Where, add_cursor, encode_cursor

Rows = list[tuple[Any, ...]]
Statement = tuple[str, Mapping[str, object] | Sequence[object]]

#: fields the store maintains itself besides BASE_FIELDS; ``update`` ignores them
OWNED_FIELDS: dict[Kind, frozenset[str]] = {
    Kind.MESSAGE: frozenset({"seq", "conversation_id"}),
    Kind.CONVERSATION: frozenset({"message_count"}),
}


@dataclass(frozen=True, slots=True)
class Plan:
    """A step as statements (run in order, in the batch's transaction) and how to read their rows."""

    statements: list[Statement]
    finish: Callable[[list[Rows]], object]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- records <-> rows ----------------------------------------------------------------------------


def record(spec: PgTable, row: Sequence[Any]) -> Record:
    """A row read with ``spec.select`` as the record: ``data`` with the owned columns laid over it."""
    sid, context, user_id, created_at, updated_at = row[:5]
    rec: Record = jsontext.loads(row[-1])
    rec.update(sid=sid, context=context, user_id=user_id, created_at=created_at, updated_at=updated_at)
    for name, value in zip(spec.owned_names, row[5:-1], strict=True):
        if value is not None:
            rec[name] = value
    return rec


def _hot_values(spec: PgTable, rec: Record) -> dict[str, object]:
    """The kind's hot columns from the record, type-checked so that column and JSON never disagree."""
    out: dict[str, object] = {}
    for name, sqltype in spec.hot:
        value = rec.get(name)
        if sqltype.startswith("text"):
            value = "" if value is None else value
            if not isinstance(value, str):
                raise InvalidInput(f"field {name!r} must be text")
        elif not isinstance(value, bool | None):
            raise InvalidInput(f"field {name!r} must be true or false")
        else:
            value = int(bool(value))
        out[name] = value
    return out


def _owned_values(spec: PgTable, rec: Record) -> dict[str, object]:
    """The owned columns of a whole record (restore, update): NULL where the record has no value."""
    out: dict[str, object] = {}
    for name, _ in spec.owned:
        value = rec.get(name)
        if name == "last_channel":
            out[name] = value if isinstance(value, str) else None
        elif value is None and name != "seq":
            out[name] = None
        elif not isinstance(value, int) or isinstance(value, bool):
            raise InvalidInput(f"field {name!r} must be an integer")
        else:
            out[name] = value
    return out


def _data(spec: PgTable, rec: Record, owned: dict[str, object]) -> str:
    """``data``: the record without the fields the columns hold (the owned ones that are set)."""
    drop = set(BASE_FIELDS) | {k for k, v in owned.items() if v is not None}
    return jsontext.record_text({k: v for k, v in rec.items() if k not in drop})


def search_text(spec: PgTable, rec: Record) -> str:
    value = rec.get(spec.text_field) if spec.text_field else None
    return value.replace("\x00", " ") if isinstance(value, str) else ""


def _fts_sql(spec: PgTable) -> tuple[str, str]:
    """The ``fts`` column and its value expression, or nothing for a kind without text search."""
    return (", fts", ", to_tsvector('simple', %(text)s)") if spec.text_field else ("", "")


def row_values(spec: PgTable, rec: Record) -> dict[str, object]:
    """Every column of a whole record (restore and update), as named parameters."""
    owned = _owned_values(spec, rec)
    values: dict[str, object] = {
        "sid": rec["sid"],
        "c": rec["context"],
        "u": rec["user_id"],
        "created_at": rec["created_at"],
        "updated_at": rec["updated_at"],
        **_hot_values(spec, rec),
        **owned,
        "data": _data(spec, rec, owned),
        "text": search_text(spec, rec),
    }
    return values


def insert_sql(spec: PgTable) -> str:
    cols = ("sid", "context", "user_id", "created_at", "updated_at", *spec.hot_names, *spec.owned_names)
    params: tuple[str, ...] = ("%(sid)s", "%(c)s", "%(u)s", "%(created_at)s", "%(updated_at)s")
    params += tuple(f"%({n})s" for n in (*spec.hot_names, *spec.owned_names))
    fts_col, fts_val = _fts_sql(spec)
    return (
        f"INSERT INTO {spec.table} ({', '.join(cols)}, data{fts_col}) "
        f"VALUES ({', '.join(params)}, %(data)s{fts_val})"
    )


def rewrite_sql(spec: PgTable) -> str:
    names = ("created_at", "updated_at", *spec.hot_names, *spec.owned_names, "data")
    fts_col, fts_val = _fts_sql(spec)
    sets = ", ".join(f"{n} = %({n})s" for n in names)
    if fts_col:
        sets += f", fts = {fts_val.removeprefix(', ')}"
    return f"UPDATE {spec.table} SET {sets} WHERE id = %(id)s"


# -- the plans -----------------------------------------------------------------------------------


def get_plan(scope: Scope, step: GetStep) -> Plan:
    spec = TABLES[step.kind]
    sql = f"SELECT {spec.select} FROM {spec.table} WHERE context = %s AND sid = %s AND user_id = %s"
    return Plan(
        [(sql, (scope.context, step.sid, scope.user_id))],
        lambda rows: record(spec, rows[0][0]) if rows[0] else None,
    )


def list_plan(scope: Scope, step: ListStep) -> Plan:
    spec, query = TABLES[step.kind], step.query
    limit = check_limit(query.limit)
    where = scoped(scope.context, scope.user_id)
    if query.text is not None:
        return _search_plan(spec, where, step, limit)
    add_filters(spec, where, query.filters)
    expr = order_expr(spec, query)
    add_cursor(where, expr, query)
    direction = "DESC" if query.descending else "ASC"
    sql = (
        f"SELECT {spec.select}, {expr} FROM {spec.table} WHERE {where.clause()} "
        f"ORDER BY {expr} {direction}, sid {direction} LIMIT %s"
    )

    def finish(rows: list[Rows]) -> Page[Record]:
        found = rows[0]
        items = [record(spec, row[:-1]) for row in found[:limit]]
        more = len(found) > limit
        return Page(items, encode_cursor(found[limit - 1][-1], items[-1]["sid"]) if more else None)

    return Plan([(sql, [*where.params, limit + 1])], finish)


def _search_plan(spec: PgTable, where: Where, step: ListStep, limit: int) -> Plan:
    if spec.text_field is None:
        raise InvalidInput(f"text search is not available for {spec.table}")
    if step.query.cursor is not None:
        raise InvalidInput("text search does not page with a cursor")
    words = ts_query(step.query.text or "")
    if words is None:
        return Plan([], lambda rows: Page([]))
    add_filters(spec, where, step.query.filters)
    sql = (
        f"SELECT {spec.select} FROM {spec.table}, to_tsquery('simple', %s) AS q "
        f"WHERE fts @@ q AND {where.clause()} ORDER BY ts_rank(fts, q) DESC, sid LIMIT %s"
    )
    return Plan([(sql, [words, *where.params, limit])], lambda rows: Page([record(spec, r) for r in rows[0]]))


def count_plan(scope: Scope, step: CountStep) -> Plan:
    spec = TABLES[step.kind]
    where = scoped(scope.context, scope.user_id)
    add_filters(spec, where, step.filters or {})
    sql = f"SELECT count(*) FROM {spec.table} WHERE {where.clause()}"
    return Plan([(sql, where.params)], lambda rows: int(rows[0][0][0]))


def create_plan(scope: Scope, step: CreateStep) -> Plan:
    spec = TABLES[step.kind]
    body = {k: v for k, v in step.fields.items() if k not in BASE_FIELDS}
    now = now_ms()
    params: dict[str, object] = {
        "c": scope.context,
        "u": scope.user_id,
        "k": step.request_key,
        "kind": step.kind.value,
        "now": now,
        "text": search_text(spec, body),
        **_hot_values(spec, body),
    }
    if step.kind is Kind.MESSAGE:
        return _message_plan(spec, body, params)
    owned = _owned_values(spec, body)
    params.update(owned)
    params["data"] = _data(spec, body, owned)
    return Plan([(_insert_cte(spec, None), params)], lambda rows: record(spec, rows[-1][0]))


def _insert_cte(spec: PgTable, seq_expr: str | None) -> str:
    """One statement: the record under the request key if there is one, else a new record (its sid
    from the context's counter). ``seq_expr``: a message's seq."""
    t = spec.table
    names = (*spec.hot_names, *spec.owned_names)
    values = [f"%({n})s" for n in names]
    if seq_expr is not None:
        values[names.index("seq")] = seq_expr
    fts_col, fts_val = _fts_sql(spec)
    return (
        f"WITH prior AS (SELECT {spec.select} FROM {t} "
        "WHERE context = %(c)s AND user_id = %(u)s AND request_key = %(k)s), "
        "ctr AS (INSERT INTO counters AS n (context, kind, last) SELECT %(c)s, %(kind)s, 1 "
        "WHERE NOT EXISTS (SELECT 1 FROM prior) "
        "ON CONFLICT (context, kind) DO UPDATE SET last = n.last + 1 RETURNING last), "
        f"ins AS (INSERT INTO {t} (sid, context, user_id, created_at, updated_at, {', '.join(names)}, "
        f"request_key, data{fts_col}) SELECT hero_sid(last), %(c)s, %(u)s, %(now)s, %(now)s, "
        f"{', '.join(values)}, %(k)s, %(data)s{fts_val} FROM ctr RETURNING {spec.select}) "
        "SELECT * FROM prior UNION ALL SELECT * FROM ins"
    )


def _message_plan(spec: PgTable, body: Record, params: dict[str, object]) -> Plan:
    """Two statements: lock and touch the conversation (which orders concurrent appends), failing
    when it is missing; then insert the message numbered after every committed one (a statement of
    its own: its snapshot, taken after the lock was granted, sees the message of the writer that
    held it). Unless the request key was used already: then nothing is written, the stored one read."""
    conv_id = body.get("conversation_id")
    if not isinstance(conv_id, str):
        raise InvalidInput("a message needs a conversation_id")
    channel = body.get("channel")
    params.update(conv=conv_id, channel=channel if isinstance(channel, str) and channel else None, seq=0)
    params["data"] = _data(spec, body, {"seq": 0})
    prior = (
        "EXISTS (SELECT 1 FROM messages WHERE context = %(c)s AND user_id = %(u)s AND request_key = %(k)s)"
    )
    touch = (
        "WITH touched AS (UPDATE conversations SET message_count = coalesce(message_count, 0) + 1, "
        "updated_at = %(now)s, last_channel = coalesce(%(channel)s, last_channel) "
        f"WHERE context = %(c)s AND user_id = %(u)s AND sid = %(conv)s AND NOT {prior} RETURNING 1) "
        f"SELECT hero_fail('not-found', %(conv)s) WHERE NOT {prior} AND NOT EXISTS (SELECT 1 FROM touched)"
    )
    seq = (
        "(SELECT coalesce(max(seq), 0) + 1 FROM messages WHERE context = %(c)s AND user_id = %(u)s "
        "AND conversation_id = %(conv)s)"
    )
    return Plan([(touch, params), (_insert_cte(spec, seq), params)], lambda rows: record(spec, rows[-1][0]))


def delete_plan(scope: Scope, step: DeleteStep) -> Plan:
    spec = TABLES[step.kind]
    params = {"c": scope.context, "u": scope.user_id, "sid": step.sid}
    gone = f"DELETE FROM {spec.table} WHERE context = %(c)s AND sid = %(sid)s AND user_id = %(u)s RETURNING 1"
    if step.kind is not Kind.CONVERSATION:
        return Plan([(gone, params)], lambda rows: bool(rows[0]))
    cascades = ", ".join(
        f"{t} AS (DELETE FROM {t} WHERE context = %(c)s AND user_id = %(u)s AND conversation_id = %(sid)s "
        "AND EXISTS (SELECT 1 FROM d))"
        for t in CASCADE_TABLES
    )
    sql = f"WITH d AS ({gone}), {cascades} SELECT count(*) FROM d"
    return Plan([(sql, params)], lambda rows: bool(rows[0][0][0]))


def claim_plan(scope: Scope, step: ClaimStep) -> Plan:
    """Compare-and-set in one statement, by the server's clock. The previous holder (read under the
    row lock) says how it went; a refused required claim fails the statement."""
    owner = step.owner
    params = {
        "c": scope.context,
        "u": scope.user_id,
        "key": step.key,
        "holder": step.holder,
        "ttl": step.ttl_ms,
        "host": owner.host if owner else None,
        "pid": owner.pid if owner else None,
        "started": owner.started if owner else None,
        "replace": step.replace,
        "required": step.required,
    }
    sql = (
        "WITH now AS (SELECT hero_now() AS ms), "
        "prev AS (SELECT holder, expires_at FROM leases "
        "WHERE context = %(c)s AND user_id = %(u)s AND key = %(key)s FOR UPDATE), "
        "up AS (INSERT INTO leases AS l (context, user_id, key, holder, expires_at, owner_host, owner_pid, "
        "owner_started) SELECT %(c)s, %(u)s, %(key)s, %(holder)s, ms + %(ttl)s, %(host)s, %(pid)s, "
        "%(started)s FROM now ON CONFLICT (context, user_id, key) DO UPDATE SET holder = excluded.holder, "
        "expires_at = excluded.expires_at, owner_host = excluded.owner_host, "
        "owner_pid = excluded.owner_pid, owner_started = excluded.owner_started "
        "WHERE l.holder = excluded.holder OR l.expires_at <= (SELECT ms FROM now) "
        "OR l.holder = %(replace)s RETURNING 1), "
        "outcome AS (SELECT (SELECT holder FROM prev) AS holder, "
        "(SELECT expires_at <= (SELECT ms FROM now) FROM prev) AS lapsed, EXISTS (SELECT 1 FROM up) AS won) "
        "SELECT holder, lapsed, won, CASE WHEN %(required)s AND NOT won "
        "THEN hero_fail('lease-held', %(key)s) END FROM outcome"
    )

    def finish(rows: list[Rows]) -> Claimed:
        holder, lapsed, won, _ = rows[0][0]
        if not won:
            return Claimed.REFUSED
        if holder is None:
            return Claimed.TAKEN
        if holder == step.holder:
            return Claimed.RENEWED
        return Claimed.LAPSED if lapsed else Claimed.REPLACED

    return Plan([(sql, params)], finish)


def release_plan(scope: Scope, step: ReleaseStep) -> Plan:
    sql = "DELETE FROM leases WHERE context = %s AND user_id = %s AND key = %s AND holder = %s"
    return Plan([(sql, (scope.context, scope.user_id, step.key, step.holder))], lambda rows: None)


def settled_guard(scope: Scope, conversation_id: str) -> Plan:
    """The fast :class:`~store.engine.MarkCutStep`: nothing to mark when the newest message is an
    assistant answer without tool calls (or there is none); anything else fails the message so that
    the batch runs again step by step, with the full marking (``store.cut_turns``)."""
    sql = (
        "SELECT hero_fail('unsettled', '') FROM (SELECT data::json AS d FROM messages "
        "WHERE context = %s AND user_id = %s AND conversation_id = %s ORDER BY seq DESC LIMIT 1) h "
        "WHERE NOT (h.d->>'role' = 'assistant' AND coalesce(h.d->>'tool_calls', '') IN ('', '[]'))"
    )
    return Plan([(sql, (scope.context, scope.user_id, conversation_id))], lambda rows: [])


#: the steps that are one plan (MarkCutStep and UpdateStep need the client between statements)
PLANS: dict[type, Callable[[Scope, Any], Plan]] = {
    GetStep: get_plan,
    ListStep: list_plan,
    CountStep: count_plan,
    CreateStep: create_plan,
    DeleteStep: delete_plan,
    ClaimStep: claim_plan,
    ReleaseStep: release_plan,
}


# -- leases read back ----------------------------------------------------------------------------

LEASE_COLUMNS = "user_id, key, holder, expires_at - hero_now(), owner_host, owner_pid, owner_started"


def lease(row: Sequence[Any]) -> Lease:
    user_id, key, holder, expires_in, host, pid, started = row
    owner = LeaseOwner.from_json({"host": host, "pid": pid, "started": started})
    return Lease(str(user_id), str(key), str(holder), owner, None if expires_in is None else int(expires_in))
