"""The postgres engine's prepared statements (``store/postgres/prepared.py``), on the real server: a
statement is prepared once per connection and then only executed, at most ``PER_CONNECTION`` stay
prepared, a statement the server cannot prepare runs as text, and a failure that leaves the server's
set unknown is followed by ``DEALLOCATE ALL``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from agent.metrics import TurnMetrics
from store import Message, Scope, Store
from store.engine import ListQuery
from store.errors import NotFound
from store.models import Kind
from store.postgres import prepared
from store.postgres.batch import _one_message
from store.postgres.engine import PostgresEngine
from store.postgres.ops import Statement
from tests.store.postgres_fixtures import drop_database, new_database, settings_for

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
SCOPE = Scope("default", "alice")


@pytest.fixture
async def database() -> AsyncIterator[str]:
    url = await new_database()
    try:
        yield url
    finally:
        await drop_database(url)


async def server_prepared(engine: PostgresEngine) -> set[str]:
    """The names the engine's one connection holds prepared, as the server says."""
    assert engine._pool is not None
    async with engine._pool.connection() as conn:
        cur = await conn.execute("SELECT name FROM pg_prepared_statements")
        return {str(r[0]) for r in await cur.fetchall()}


def message(conv: str, text: str) -> Message:
    return Message(conversation_id=conv, role="user", content=text, channel="cli")


async def test_a_statement_is_prepared_once_per_connection_then_executed(database: str) -> None:
    engine = PostgresEngine(settings_for(database), min_size=1, max_size=1)
    async with Store(engine) as store:
        conv = await store.conversations.create(SCOPE, "t", channel="cli")
        await store.messages.append(SCOPE, message(conv.sid, "first"))
        held = await server_prepared(engine)
        assert held and all(name.startswith("hero_") for name in held)
        before = dict(prepared.STATS)
        for i in range(5):
            stored = await store.messages.append(SCOPE, message(conv.sid, f"m{i}"))
            assert stored.seq == i + 2
        assert prepared.STATS["prepared"] == before["prepared"]  # nothing prepared again
        assert await server_prepared(engine) == held
        page = await store.messages.list(SCOPE, conv.sid)
        assert [m.content for m in page.items] == ["first", *(f"m{i}" for i in range(5))]
        # a hero_fail stops the batch after its set-up: what it prepared is kept, nothing is reset
        with pytest.raises(NotFound):
            await store.messages.append(SCOPE, message("zzzz", "nowhere"))
        before = dict(prepared.STATS)
        await store.messages.append(SCOPE, message(conv.sid, "after"))
        assert (prepared.STATS["prepared"], prepared.STATS["resets"]) == (
            before["prepared"],
            before["resets"],
        )
        shown = TurnMetrics(store_engine=store.engine).render_lines()
        assert any(
            line.startswith('hero_store_prepared_total{engine="postgres",event="prepared"}') for line in shown
        )


async def test_at_most_per_connection_statements_stay_prepared(database: str) -> None:
    engine = PostgresEngine(settings_for(database), min_size=1, max_size=1)
    async with Store(engine) as store:
        conv = await store.conversations.create(SCOPE, "t", channel="cli")
        sids = [(await store.messages.append(SCOPE, message(conv.sid, f"m{i}"))).sid for i in range(3)]
        before = prepared.STATS["deallocated"]
        # an `in` filter of n values is a statement text of its own: more shapes than the bound
        for n in range(1, prepared.PER_CONNECTION + 20):
            wanted = [sids[0], *(f"none{k}" for k in range(n - 1))]
            page = await engine.list(Kind.MESSAGE, SCOPE, ListQuery({"sid__in": wanted}))
            assert [r["sid"] for r in page.items] == [sids[0]]
        assert len(await server_prepared(engine)) <= prepared.PER_CONNECTION
        assert prepared.STATS["deallocated"] > before
        assert (await store.messages.append(SCOPE, message(conv.sid, "still"))).seq == 4


async def test_a_statement_the_server_cannot_prepare_runs_as_text(database: str) -> None:
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        sql = "SELECT %s IS NULL"  # a parameter of no type the server can tell: PREPARE refuses it
        refused, resets = prepared.STATS["refused"], prepared.STATS["resets"]
        assert await _one_message(conn, [(sql, [None])]) == [[(True,)]]
        # refused, and sent again as text after a DEALLOCATE ALL (the failed message left the set unknown)
        assert (prepared.STATS["refused"], prepared.STATS["resets"]) == (refused + 1, resets + 1)
        assert await _one_message(conn, [(sql, ["x"])]) == [[(False,)]]  # as text, no PREPARE again
        assert (prepared.STATS["refused"], prepared.STATS["resets"]) == (refused + 1, resets + 1)
        assert await _names(conn) == set()


async def test_a_failure_that_leaves_the_set_unknown_is_followed_by_deallocate_all(database: str) -> None:
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        ok = ("SELECT count(*) FROM counters WHERE context = %s", ["x"])
        assert await _one_message(conn, [ok]) == [[(0,)]]
        assert len(await _names(conn)) == 1
        resets = prepared.STATS["resets"]
        with pytest.raises(psycopg.errors.UndefinedTable):
            await _one_message(conn, [("SELECT * FROM no_such_table WHERE a = %s", [1])])
        # the PREPARE failed: the set is unknown, so the retry as text began with DEALLOCATE ALL
        assert prepared.STATS["resets"] == resets + 1
        assert await _names(conn) == set()
        assert await _one_message(conn, [ok]) == [[(0,)]]
        assert len(await _names(conn)) == 1  # prepared again


async def _names(conn: psycopg.AsyncConnection[Any]) -> set[str]:
    cur = await conn.execute("SELECT name FROM pg_prepared_statements")
    return {str(r[0]) for r in await cur.fetchall()}


async def test_a_statement_gone_from_the_server_is_prepared_again_in_the_same_call(database: str) -> None:
    """What a pooler in transaction mode does (another server connection, without our statements),
    here by a DEALLOCATE ALL behind the engine's back: the call still answers, and nothing of the
    failed attempt was committed."""
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        await conn.execute("CREATE TABLE t (a integer)")
        insert: Statement = ("INSERT INTO t VALUES (%s)", [1])
        count: Statement = ("SELECT count(*) FROM t", [])
        assert await _one_message(conn, [("BEGIN", ()), insert, ("COMMIT", ())]) == [[], [], []]
        await conn.execute("DEALLOCATE ALL")
        resets = prepared.STATS["resets"]
        assert await _one_message(conn, [("BEGIN", ()), insert, count, ("COMMIT", ())]) == [
            [],
            [],
            [(2,)],
            [],
        ]
        assert prepared.STATS["resets"] == resets + 1
        assert len(await _names(conn)) == 2
        assert await _one_message(conn, [count]) == [[(2,)]]
