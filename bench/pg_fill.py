"""Bulk loading for ``bench/store_growth.py --engine postgres``: COPY straight into the engine's schema.

The engine's import path (``restore_batch``) checks every record against the stored one, row by row;
at ~1,100 messages/s a 1M-message store took a quarter of an hour to fill. The benchmark measures the
store once it is full, not the filling, so it loads with ``COPY`` into a temporary staging table and
one ``INSERT ... SELECT`` per kind and batch (the text-search column computed by the server, exactly
as the engine's writes compute it), in one transaction per batch.

What the engine keeps besides the rows stays consistent, and :func:`check_invariants` proves it after
every fill: each conversation's ``message_count`` is its number of messages and its ``seq`` runs
gap-free from 1 (the engine numbers the next message ``max(seq) + 1``); the ``counters`` row of every
(context, kind) is at least the highest sid number stored (the engine allocates sids from it).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import psycopg

from store import Kind, Record
from store.postgres import ops
from store.postgres.schema import TABLES, PgTable

Conn = psycopg.AsyncConnection[Any]


_PARAM = {"context": "c", "user_id": "u"}


def _columns(spec: PgTable) -> tuple[str, ...]:
    return ("sid", "context", "user_id", "created_at", "updated_at", *spec.hot_names, *spec.owned_names)


def _stage(spec: PgTable) -> str:
    return f"hero_stage_{spec.table}"


class PgLoader:
    """One connection that writes records of any kind, new or already stored (then replaced)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Conn | None = None

    async def __aenter__(self) -> PgLoader:
        self.conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        for spec in TABLES.values():
            # the table's own column types, no constraints (temporary: this session only)
            text = ", ''::text AS text" if spec.text_field else ""
            await self.conn.execute(
                f"CREATE TEMP TABLE {_stage(spec)} AS SELECT {', '.join(_columns(spec))}, data{text} "
                f"FROM {spec.table} WITH NO DATA"
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def write(self, items: Sequence[tuple[Kind, Record]]) -> None:
        """Every record of ``items`` in one transaction: inserted, or replacing the stored one of its sid."""
        assert self.conn is not None
        by_kind: dict[Kind, list[Record]] = defaultdict(list)
        for kind, rec in items:
            by_kind[kind].append(rec)
        async with self.conn.transaction():
            for kind, recs in by_kind.items():
                await self._write_kind(TABLES[kind], recs)
            await self._advance_counters(by_kind)

    async def _write_kind(self, spec: PgTable, recs: list[Record]) -> None:
        assert self.conn is not None
        cols = _columns(spec)
        names = (*cols, "data", *(("text",) if spec.text_field else ()))
        keys = [_PARAM.get(n, n) for n in names]  # ``ops.row_values`` names context and user c and u
        cur = self.conn.cursor()
        async with cur.copy(f"COPY {_stage(spec)} ({', '.join(names)}) FROM STDIN") as copy:
            for rec in recs:
                values = ops.row_values(spec, rec)
                await copy.write_row([values[k] for k in keys])
        fts_col, fts_val = (", fts", ", to_tsvector('simple', text)") if spec.text_field else ("", "")
        sets = ", ".join(f"{c} = excluded.{c}" for c in (*cols[3:], "data", *(("fts",) if fts_col else ())))
        await self.conn.execute(
            f"INSERT INTO {spec.table} ({', '.join(cols)}, data{fts_col}) "
            f"SELECT {', '.join(cols)}, data{fts_val} FROM {_stage(spec)} "
            f"ON CONFLICT (context, sid) DO UPDATE SET {sets}"
        )
        await self.conn.execute(f"TRUNCATE {_stage(spec)}")

    async def _advance_counters(self, by_kind: dict[Kind, list[Record]]) -> None:
        """The sid allocator past every sid written (as ``store.postgres.transfer.restore_batch``)."""
        assert self.conn is not None
        highest: dict[tuple[str, str], int] = {}
        for kind, recs in by_kind.items():
            for rec in recs:
                key = (rec["context"], kind.value)
                highest[key] = max(highest.get(key, 0), int(rec["sid"], 36))
        for (context, kind_value), number in highest.items():
            await self.conn.execute(
                "INSERT INTO counters AS n (context, kind, last) VALUES (%s, %s, %s) "
                "ON CONFLICT (context, kind) DO UPDATE SET last = greatest(n.last, excluded.last)",
                (context, kind_value, number),
            )


async def check_invariants(url: str) -> str:
    """What the engine relies on, checked over the whole database; a one-line summary, or SystemExit."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM conversations c LEFT JOIN (SELECT context, user_id, conversation_id, "
            "count(*) AS n, max(seq) AS top, min(seq) AS low FROM messages "
            "GROUP BY context, user_id, conversation_id) m "
            "ON m.context = c.context AND m.user_id = c.user_id AND m.conversation_id = c.sid "
            "WHERE coalesce(c.message_count, 0) <> coalesce(m.n, 0) "
            "OR coalesce(m.top, 0) <> coalesce(m.n, 0) OR coalesce(m.low, 1) <> 1"
        )
        row = await cur.fetchone()
        bad_convs = int(row[0]) if row else -1
        bad_counters = []
        for kind, spec in TABLES.items():
            cur = await conn.execute(
                f"SELECT t.context, max(length(t.sid)), (SELECT last FROM counters n "
                f"WHERE n.context = t.context AND n.kind = %s) FROM {spec.table} t GROUP BY t.context",
                (kind.value,),
            )
            for context, width, last in await cur.fetchall():
                top = await conn.execute(
                    f"SELECT max(sid) FROM {spec.table} WHERE context = %s AND length(sid) = %s",
                    (context, width),
                )
                top_row = await top.fetchone()
                if top_row is None or last is None or int(top_row[0], 36) > int(last):
                    bad_counters.append(f"{context}/{kind.value}")
        cur = await conn.execute("SELECT count(*) FROM messages")
        total = await cur.fetchone()
    if bad_convs or bad_counters:
        raise SystemExit(
            f"the loaded store breaks the engine's invariants: {bad_convs} conversations with a wrong "
            f"message_count or seq, counters behind the sids in {bad_counters}"
        )
    return f"invariants hold ({total[0] if total else 0} messages: message_count, gap-free seq, sid counters)"


async def commit_baseline(url: str, samples: int) -> str:
    """p50/p99 of a bare one-row INSERT committed on the same server (durable, one round trip): the
    floor an append cannot beat on this disk and this machine at this moment."""
    times: list[float] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS hero_bench_baseline (x integer)")
        for i in range(samples):
            start = time.perf_counter()
            await conn.execute("INSERT INTO hero_bench_baseline VALUES (%s)", (i,))
            times.append((time.perf_counter() - start) * 1000)
        await conn.execute("DROP TABLE hero_bench_baseline")
    ordered = sorted(times)
    p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"p50 {p50:.3f} ms, p99 {p99:.3f} ms"


async def maintenance(url: str) -> dict[str, int]:
    """The server's background maintenance so far: autovacuum and autoanalyze runs (all tables),
    checkpoints (timed and requested), autovacuum workers at work now. Two snapshots around a
    measurement say whether any of it ran meanwhile (its I/O and CPU land in the measured calls' tail)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(autovacuum_count), 0), coalesce(sum(autoanalyze_count), 0) "
            "FROM pg_stat_user_tables"
        )
        vacuums, analyzes = (await cur.fetchone()) or (0, 0)
        cur = await conn.execute("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
        checkpoints = ((await cur.fetchone()) or (0,))[0]
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
        )
        workers = ((await cur.fetchone()) or (0,))[0]
    return {
        "autovacuum": int(vacuums),
        "autoanalyze": int(analyzes),
        "checkpoints": int(checkpoints),
        "autovacuum workers running": int(workers),
    }


def during(before: dict[str, int], after: dict[str, int]) -> str:
    """What ran between two :func:`maintenance` snapshots, as one line."""
    ran = [f"{name} {after[name] - before[name]}" for name in before if after[name] != before[name]]
    return ", ".join(ran) if ran else "none"
