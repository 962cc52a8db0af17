"""The ``postgres`` engine: the records in a PostgreSQL database, through psycopg 3 and its pool.

``[store] engine = "postgres"`` with ``url = "postgresql://user@host:port/db?sslmode=..."``. libpq
reads the URL (every libpq parameter works: ``sslmode``, ``sslrootcert``, ``connect_timeout``, ...)
and finds the password in the URL, ``PGPASSWORD`` or ``~/.pgpass``; ``[store] secret`` overrides
them. Errors and logs name the host and port only.

Faults (docs/store.md, "The postgres engine"): a batch that failed before its COMMIT was sent, or that
the server refused with a serialization failure or a deadlock, is retried (the server rolled it back).
A batch whose COMMIT was sent but never answered has an unknown outcome: it is retried only when
every write in it is safe to repeat (creates carry a request key, claims, releases, updates,
cut-turn marks); otherwise StoreUnavailable says the outcome is unknown. A database that stays down
is StoreUnavailable naming host and port; the pool reconnects by itself when it is back.
"""

from __future__ import annotations

import builtins
import contextlib
import select
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import psycopg
import structlog
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from config.settings import StoreSettings
from store.engine import (
    Capabilities,
    CommitStats,
    CreateStep,
    DeleteStep,
    Engine,
    Results,
    Step,
    dump_in_pages,
    leases_only,
    reads_only,
)
from store.errors import Conflict, InvalidInput, StoreUnavailable
from store.leases import Lease
from store.models import Kind, Record, Scope, validate_stored_context, validate_user
from store.postgres import batch as pg_batch
from store.postgres import ops, prepared
from store.postgres.schema import TABLES
from store.postgres.transfer import contexts, dump_page, rename_user, restore_batch
from store.postgres.upgrade import migrate

log = structlog.get_logger()
_BACKOFF_S = (0.05, 0.2, 0.5, 1.0, 2.0)
#: what ``counters()`` counts (failed attempts by reason, calls that stayed unreachable)
EVENTS = ("connection", "serialization", "unknown_commit", "unreachable")


def where(url: str) -> str:
    """``host:port`` of a libpq URL, for messages (never the password or the other parameters)."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<invalid url>"
    host = str(info.get("host") or info.get("hostaddr") or "localhost")
    return f"{host}:{info.get('port') or 5432}"


class _Retry(Exception):
    """An attempt that failed in a way that is safe to repeat; ``reason`` is counted."""

    def __init__(self, reason: str, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.reason = reason


def repeatable(steps: Sequence[Step]) -> bool:
    """Every write of the batch may run twice with the effect of once (see the module docstring)."""
    for step in steps:
        if isinstance(step, CreateStep) and step.request_key is None:
            return False
        if isinstance(step, DeleteStep):  # a second run answers False: the caller would see "missing"
            return False
    return True


async def _fresh(conn: AsyncConnection[Any]) -> None:
    """The pool's check on lending a connection, without a round trip: an idle connection that has
    something to read was closed (or told to close) by the server."""
    if not conn.closed and select.select([conn.fileno()], [], [], 0)[0]:
        await conn.close()  # closed, the pool drops it and connects anew
    if conn.closed:
        raise psycopg.OperationalError("the server closed this connection")


class PostgresEngine(Engine):
    """Every record in PostgreSQL (see the module docstring)."""

    name = "postgres"
    capabilities = Capabilities()

    def __init__(self, settings: StoreSettings, *, min_size: int = 1, max_size: int = 10) -> None:
        self.url = settings.url
        self.where = where(settings.url)
        self.timeout_s = settings.timeout_s
        self.retries = max(0, settings.retries)
        # no server-side prepared statements: the batches that count go as one client-bound message
        # (store.postgres.batch), and a pooler in front of the server need not track named statements
        self._kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}
        if settings.secret:
            self._kwargs["password"] = settings.secret
        self._min, self._max = min_size, max_size
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self._events: Counter[str] = Counter()
        #: the write batches committed, and those among them that waited for the WAL flush (all but
        #: the lease-only ones: ``store.postgres.batch.UNSYNCED``), for ``/metrics``
        self._commits = CommitStats()

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            self.url,
            kwargs=self._kwargs,
            min_size=self._min,
            max_size=self._max,
            open=False,
            check=_fresh,
            timeout=self.timeout_s,
            reconnect_timeout=max(self.timeout_s, 60.0),
            name=f"hero-agent:{self.where}",
        )
        try:
            await pool.open(wait=True, timeout=self.timeout_s)
            async with pool.connection() as conn:
                await migrate(conn)
        except (PoolTimeout, psycopg.Error) as exc:
            await pool.close()
            raise self._unavailable(exc) from None
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        log.debug("store.opened", engine=self.name, server=self.where)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
            log.debug("store.closed", engine=self.name)

    def _unavailable(self, exc: BaseException | None = None) -> StoreUnavailable:
        detail = ""
        if isinstance(exc, psycopg.Error):
            detail = f": {(exc.diag.message_primary or str(exc)).strip().splitlines()[0]}"
        elif isinstance(exc, PoolTimeout):
            detail = ": no connection within the timeout"
        return StoreUnavailable(f"the PostgreSQL store at {self.where} is unavailable{detail}")

    def counters(self) -> dict[str, int]:
        """Failed attempts by reason, unreachable calls, and the process's prepared statements
        (``prepared:...``, :data:`store.postgres.prepared.STATS`)."""
        events = {event: self._events[event] for event in EVENTS}
        return events | {f"prepared:{k}": n for k, n in sorted(prepared.STATS.items())}

    def gauges(self) -> dict[str, int]:
        """The pool: connections ``open`` and lent out (``in_use``)."""
        if self._pool is None:
            return {"open": 0, "in_use": 0}
        stats = self._pool.get_stats()
        size = stats.get("pool_size", 0)
        return {"open": size, "in_use": size - stats.get("pool_available", 0)}

    # -- transport --------------------------------------------------------------------------------

    async def _with_conn(self, fn: Any, *args: Any, writes: bool, safe: bool) -> Any:
        """``fn(conn, *args)`` on a pooled connection, retried as the module docstring says."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await anyio.sleep(_BACKOFF_S[min(attempt - 1, len(_BACKOFF_S) - 1)])
            try:
                return await self._attempt(pool, fn, args, writes=writes, safe=safe)
            except _Retry as exc:
                self._events[exc.reason] += 1
                last = exc.__cause__ or exc
                log.debug("store.retry", engine=self.name, reason=exc.reason, attempt=attempt + 1)
        self._events["unreachable"] += 1
        raise self._unavailable(last)

    async def _attempt(self, pool: Any, fn: Any, args: tuple[Any, ...], *, writes: bool, safe: bool) -> Any:
        try:
            async with pool.connection() as conn:
                try:
                    return await fn(conn, *args)
                except psycopg.Error:
                    if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        with contextlib.suppress(psycopg.Error):
                            await conn.execute("ROLLBACK")
                    raise
        except PoolTimeout as exc:
            raise _Retry("connection", exc) from exc
        except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as exc:
            raise _Retry("serialization", exc) from exc
        except psycopg.errors.UniqueViolation as exc:
            constraint = exc.diag.constraint_name or ""
            if constraint.endswith("_request_key") or constraint == "messages_seq":
                # two writers raced for one request key (or one seq): the loser's retry sees the winner
                raise _Retry("serialization", exc) from exc
            raise Conflict(f"conflicting write: {exc.diag.message_primary}") from None
        except (psycopg.errors.DataError, psycopg.errors.UndefinedFunction) as exc:
            raise InvalidInput(f"invalid value: {exc.diag.message_primary}") from None
        except psycopg.OperationalError as exc:
            if isinstance(exc, psycopg.errors.QueryCanceled):
                raise self._unavailable(exc) from None
            if not writes:
                raise _Retry("connection", exc) from exc
            if safe:
                raise _Retry("unknown_commit", exc) from exc
            self._events["unknown_commit"] += 1
            raise StoreUnavailable(
                f"the PostgreSQL store at {self.where} went away during a write; its outcome is unknown"
            ) from None
        except psycopg.DataError as exc:
            raise InvalidInput(f"invalid value: {exc}") from None

    # -- the seam ---------------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._with_conn(_ping, writes=False, safe=True)

    async def batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        steps = builtins.list(steps)
        if not steps:
            return Results(steps, [])
        writes = not all(reads_only(s) for s in steps)
        results: Results = await self._with_conn(
            _batch, scope, steps, writes=writes, safe=not writes or repeatable(steps)
        )
        if writes:
            self._commits.grouped(1, committed=True, synced=not leases_only(steps))
        return results

    def commit_stats(self) -> CommitStats | None:
        return self._commits

    async def get_lease(self, scope: Scope, key: str) -> Lease | None:
        rows = await self._with_conn(
            _fetch,
            f"SELECT {ops.LEASE_COLUMNS} FROM leases WHERE context = %s AND user_id = %s AND key = %s",
            (scope.context, scope.user_id, key),
            writes=False,
            safe=True,
        )
        return ops.lease(rows[0]) if rows else None

    async def list_leases(self, context: str, prefix: str) -> builtins.list[Lease]:
        validate_stored_context(context)
        rows = await self._with_conn(
            _fetch,
            f"SELECT {ops.LEASE_COLUMNS} FROM leases WHERE context = %s AND left(key, %s) = %s "
            "ORDER BY user_id, key",
            (context, len(prefix), prefix),
            writes=False,
            safe=True,
        )
        return [ops.lease(r) for r in rows]

    async def contexts(self) -> builtins.list[str]:
        found: list[str] = await self._with_conn(contexts, writes=False, safe=True)
        return found

    async def dump(self, context: str) -> AsyncIterator[tuple[Kind, Record]]:
        async def read_page(kind: Kind, after: str, limit: int) -> list[Record]:
            page: list[Record] = await self._with_conn(
                dump_page, TABLES[kind], context, after, limit, writes=False, safe=True
            )
            return page

        async for item in dump_in_pages(context, read_page):
            yield item

    async def restore_batch(self, items: Sequence[tuple[Kind, Record]]) -> int:
        """All of ``items`` in ONE transaction (restoring is idempotent: safe to repeat)."""
        written: int = await self._with_conn(restore_batch, builtins.list(items), writes=True, safe=True)
        return written

    async def rename_user(self, context: str, old: str, new: str, *, merge: bool = False) -> dict[str, int]:
        """One transaction (see ``store.postgres.transfer``); a repeat after a lost answer moves nothing."""
        validate_stored_context(context)
        moved: dict[str, int] = await self._with_conn(
            rename_user, context, validate_user(old), validate_user(new), merge, writes=True, safe=True
        )
        return moved


async def _ping(conn: AsyncConnection[Any]) -> None:
    await conn.execute("SELECT 1")


async def _fetch(conn: AsyncConnection[Any], sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


async def _batch(conn: AsyncConnection[Any], scope: Scope, steps: list[Step]) -> Results:
    if pg_batch.plannable(steps):
        try:
            return await pg_batch.pipelined(conn, scope, steps)
        except psycopg.Error as exc:
            outcome = pg_batch.failure(exc)
            if outcome is None:
                raise
            await _rollback(conn)
            if not isinstance(outcome, pg_batch.Unsettled):
                raise outcome from None
    try:
        return await pg_batch.stepwise(conn, scope, steps)
    except psycopg.Error as exc:
        outcome = pg_batch.failure(exc)
        if outcome is None or isinstance(outcome, pg_batch.Unsettled):
            raise
        raise outcome from None


async def _rollback(conn: AsyncConnection[Any]) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        await conn.execute("ROLLBACK")
