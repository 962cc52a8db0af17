"""What a turn costs on PostgreSQL, counted on the real server and on the wire (docs/store.md, "The
postgres engine", "A turn on the wire"): the same durable commits as the embedded engine (two: the
opening, the finish), each ONE round trip (a pipeline of the statements and the COMMIT)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import psycopg
import pytest

from agent.core import Agent, TurnRequest
from agent.events import Done, TurnEvent
from agent.metrics import TurnMetrics
from agent.providers.openai import OpenAIProvider
from config.settings import LLMSettings, MemorySettings, Settings, StoreSettings
from store import Message, Scope, Store
from store.postgres.engine import PostgresEngine
from tests.fakes.openai_server import FakeOpenAI
from tests.store.pg_wire import Relay, relay
from tests.store.postgres_fixtures import (
    drop_database,
    make_cluster,
    new_database,
    remove_cluster,
    settings_for,
)
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
SCOPE = Scope("default", "alice")


async def xids(url: str) -> int:
    """The next transaction id: it moves once per transaction that wrote (a durable commit), and
    never for a read-only one (nor for this query)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
async def database() -> AsyncIterator[str]:
    url = await new_database()
    try:
        yield url
    finally:
        await drop_database(url)


async def turn(agent: Agent, conversation_id: str, text: str) -> list[TurnEvent]:
    with anyio.fail_after(30):
        request = TurnRequest(SCOPE, "cli", text, conversation_id=conversation_id)
        return [ev async for ev in agent.handle(request)]


async def test_a_turn_is_two_commits_of_one_round_trip_each(database: str, tmp_path: Path) -> None:
    port = int(database.split("@127.0.0.1:", 1)[1].split("/", 1)[0])
    async with FakeOpenAI() as fake, relay(port) as wire:
        url = database.replace(f":{port}/", f":{wire.port}/")
        llm = LLMSettings(base_url=fake.base_url, api_key="sk-test", model="fake-model", max_retries=0)
        settings = Settings(llm=llm, memory=MemorySettings(enabled=False), store=StoreSettings(path=tmp_path))
        provider = OpenAIProvider(llm)
        try:
            async with (
                Store(PostgresEngine(settings_for(url), min_size=1, max_size=1)) as store,
                Agent(settings, store, provider, None) as agent,
            ):
                conv = await agent.conversations.new(SCOPE, channel="cli")
                for i in range(4):
                    await store.messages.append(
                        SCOPE, Message(conversation_id=conv.sid, role="user", content=f"m{i}", channel="cli")
                    )
                await turn(agent, conv.sid, "the first turn of the conversation")
                for n in range(3):
                    costs = await _measured(wire, database, agent, conv.sid, f"turn {n}")
                    assert costs == {"durable commits": 2, "round trips": 2}
        finally:
            await provider.aclose()


async def _measured(
    wire: Relay, database: str, agent: Agent, conversation_id: str, text: str
) -> dict[str, int]:
    before_xid, before_trips = await xids(database), wire.round_trips
    events = await turn(agent, conversation_id, text)
    assert any(isinstance(ev, Done) for ev in events)
    return {
        "durable commits": await xids(database) - before_xid,
        "round trips": wire.round_trips - before_trips,
    }


async def test_an_append_is_one_commit_in_one_round_trip(database: str) -> None:
    port = int(database.split("@127.0.0.1:", 1)[1].split("/", 1)[0])
    async with relay(port) as wire:
        url = database.replace(f":{port}/", f":{wire.port}/")
        async with Store(PostgresEngine(settings_for(url), min_size=1, max_size=1)) as store:
            conv = await store.conversations.create(SCOPE, "t", channel="cli")
            for i in range(3):
                before_xid, before_trips = await xids(database), wire.round_trips
                message = Message(conversation_id=conv.sid, role="user", content=f"m{i}", channel="cli")
                stored = await store.messages.append(SCOPE, message)
                assert stored.seq == i + 1
                assert (await xids(database) - before_xid, wire.round_trips - before_trips) == (1, 1)


async def wal_syncs(url: str) -> int:
    """The server's WAL flushes so far, once every other client has gone (a backend hands its counts
    to the statistics when it exits: the engine's connections must be closed first)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:

        async def alone() -> bool:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()"
            )
            row = await cur.fetchone()
            return row is not None and row[0] == 0

        await until(alone, timeout=30, interval=0.02, what="every other client backend to exit")
        row = await (await conn.execute("SELECT wal_sync FROM pg_stat_wal")).fetchone()
        assert row is not None
        return int(row[0])


async def test_expiring_lease_writes_skip_the_wal_flush_and_records_do_not() -> None:
    # fsync on (the server counts its WAL flushes); the WAL writer nearly asleep and no autovacuum
    # (their flushes would blur the count)
    cluster = make_cluster("-c wal_writer_delay=10000", "-c autovacuum=off")
    try:
        url = cluster.url()
        async with Store(PostgresEngine(settings_for(url))) as store:
            conv = await store.conversations.create(SCOPE, "t", channel="cli")
        before = await wal_syncs(url)
        async with Store(PostgresEngine(settings_for(url))) as store:
            for i in range(10):
                assert await store.engine.claim(SCOPE, f"turn:{i}", "me", 60_000)
                assert await store.engine.claim(SCOPE, f"turn:{i}", "me", 60_000)  # a renewal
                await store.engine.release(SCOPE, f"turn:{i}", "me")
            shown = TurnMetrics(store_engine=store.engine).render_lines()
            assert 'hero_store_commits_total{engine="postgres"} 30' in shown
            assert 'hero_store_fsyncs_total{engine="postgres"} 0' in shown
        leases = await wal_syncs(url) - before
        before = await wal_syncs(url)
        async with Store(PostgresEngine(settings_for(url))) as store:
            for i in range(10):
                await store.messages.append(
                    SCOPE, Message(conversation_id=conv.sid, role="user", content=f"m{i}", channel="cli")
                )
            # a mark that never expires (de-duplication) stays durable, as on the embedded engine
            assert await store.engine.claim(SCOPE, "dedup:1", "me", None)
            shown = TurnMetrics(store_engine=store.engine).render_lines()
            assert 'hero_store_commits_total{engine="postgres"} 11' in shown
            assert 'hero_store_fsyncs_total{engine="postgres"} 11' in shown
            # PostgreSQL indexes in the writing transaction: no deferred indexing to show
            assert not any(line.startswith("hero_store_indexed_messages_total") for line in shown)
        records = await wal_syncs(url) - before
        # 30 lease commits: at most a flush or two (the WAL writer's timer, a WAL page filled)
        assert leases <= 2
        assert records >= 11
    finally:
        remove_cluster(cluster)
