"""Bulk operations of the postgres engine: contexts, dump pages, restore, rename-user (one transaction
each, run by :class:`~store.postgres.engine.PostgresEngine` on a pooled connection)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from store import restore
from store.errors import Conflict
from store.models import Kind, Record
from store.postgres import ops
from store.postgres.schema import TABLES, PgTable

Conn = AsyncConnection[Any]
#: per kind, the field whose equal value in the target's records makes the moved record a duplicate
_TARGET_WINS: dict[Kind, str] = {Kind.STATE: "key", Kind.MEMORY: "hash"}


async def contexts(conn: Conn) -> list[str]:
    union = " UNION ".join(f"SELECT DISTINCT context FROM {s.table}" for s in TABLES.values())
    cur = await conn.execute(f"SELECT context FROM ({union}) c ORDER BY context")
    return [row[0] for row in await cur.fetchall()]


async def dump_page(conn: Conn, spec: PgTable, context: str, after: str, limit: int) -> list[Record]:
    cur = await conn.execute(
        f"SELECT {spec.select} FROM {spec.table} WHERE context = %s AND sid > %s ORDER BY sid LIMIT %s",
        (context, after, limit),
    )
    return [ops.record(spec, row) for row in await cur.fetchall()]


def _sid_number(sid: str) -> int:
    return int(sid, 36) if len(sid) <= 12 else 0


async def restore_batch(conn: Conn, items: Sequence[tuple[Kind, Record]]) -> int:
    """Write dumped records in one transaction; how many were new or changed."""
    highest: dict[tuple[str, Kind], int] = {}
    written = 0
    async with conn.transaction():
        for kind, rec in items:
            if await _restore_one(conn, kind, rec):
                written += 1
                key = (rec["context"], kind)
                highest[key] = max(highest.get(key, 0), _sid_number(rec["sid"]))
        for (context, kind), number in highest.items():
            await conn.execute(
                "INSERT INTO counters AS n (context, kind, last) VALUES (%s, %s, %s) "
                "ON CONFLICT (context, kind) DO UPDATE SET last = greatest(n.last, excluded.last)",
                (context, kind.value, number),
            )
    return written


async def _one(conn: Conn, sql: str, params: Sequence[object]) -> tuple[Any, ...] | None:
    cur = await conn.execute(sql, params)
    return await cur.fetchone()


async def _restore_one(conn: Conn, kind: Kind, rec: Record) -> bool:
    sid, scope = restore.target(kind, rec)
    spec = TABLES[kind]
    row = await _one(
        conn,
        f"SELECT {spec.select}, id FROM {spec.table} WHERE context = %s AND sid = %s FOR UPDATE",
        (scope.context, sid),
    )
    if restore.unchanged(kind, sid, scope, None if row is None else ops.record(spec, row[:-1]), rec):
        return False
    if kind is Kind.MESSAGE:
        conv = restore.conversation_of(sid, rec)
        exists = "SELECT 1 FROM conversations WHERE context = %s AND sid = %s AND user_id = %s"
        if await _one(conn, exists, (scope.context, conv, scope.user_id)) is None:
            raise restore.missing_conversation(sid, conv)
        seq = restore.seq_of(sid, rec)
        holder = await _one(
            conn,
            "SELECT sid FROM messages WHERE context = %s AND user_id = %s AND conversation_id = %s "
            "AND seq = %s",
            (scope.context, scope.user_id, conv, seq),
        )
        restore.check_seq_free(sid, conv, seq, None if holder is None else holder[0])
    values = ops.row_values(spec, rec)
    if row is None:
        await conn.execute(ops.insert_sql(spec), values)
    else:
        await conn.execute(ops.rewrite_sql(spec), {**values, "id": row[-1]})
    return True


async def _holds_records(conn: Conn, context: str, user: str) -> bool:
    for spec in TABLES.values():
        sql = f"SELECT 1 FROM {spec.table} WHERE context = %s AND user_id = %s LIMIT 1"
        if await _one(conn, sql, (context, user)) is not None:
            return True
    return False


async def rename_user(conn: Conn, context: str, old: str, new: str, merge: bool) -> dict[str, int]:
    """Move ``old``'s records in ``context`` to ``new`` in one transaction (as ``store.sqlite.users``).
    ``user_id`` is a column only (``data`` does not hold it), so no JSON is rewritten."""
    moved: dict[str, int] = {}
    async with conn.transaction():
        if old == new or not await _holds_records(conn, context, old):
            return moved
        if not merge and await _holds_records(conn, context, new):
            raise Conflict(f"user {new!r} already has data in context {context!r} (use --merge to merge)")
        for kind, spec in TABLES.items():
            t = spec.table
            dropped = 0
            column = _TARGET_WINS.get(kind)
            if column is not None:
                cur = await conn.execute(
                    f"DELETE FROM {t} WHERE context = %s AND user_id = %s AND {column} IN "
                    f"(SELECT {column} FROM {t} WHERE context = %s AND user_id = %s)",
                    (context, old, context, new),
                )
                dropped = cur.rowcount
            await conn.execute(
                f"UPDATE {t} SET request_key = NULL WHERE context = %s AND user_id = %s AND request_key IN "
                f"(SELECT request_key FROM {t} WHERE context = %s AND user_id = %s "
                "AND request_key IS NOT NULL)",
                (context, old, context, new),
            )
            cur = await conn.execute(
                f"UPDATE {t} SET user_id = %s WHERE context = %s AND user_id = %s", (new, context, old)
            )
            if cur.rowcount:
                moved[kind.value] = cur.rowcount
            if dropped:
                moved["dropped"] = moved.get("dropped", 0) + dropped
        await conn.execute(
            "DELETE FROM leases WHERE context = %s AND user_id = %s AND key IN "
            "(SELECT key FROM leases WHERE context = %s AND user_id = %s)",
            (context, old, context, new),
        )
        await conn.execute(
            "UPDATE leases SET user_id = %s WHERE context = %s AND user_id = %s", (new, context, old)
        )
    return moved
