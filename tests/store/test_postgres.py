"""The postgres engine's own guarantees, on real PostgreSQL servers: migrations raced by several
openers, the database down (StoreUnavailable naming host and port) and back (recovery), kill -9 of
the server during commits (no acknowledged write lost, none stored twice), TLS with verify-full,
and the password never in an error."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import psycopg
import pytest

from agent.metrics import TurnMetrics
from store import Kind, Scope, StoreUnavailable
from store.api.store import Store
from store.postgres.engine import PostgresEngine
from store.postgres.schema import MIGRATIONS, SCHEMA_VERSION, VERSION_TABLE
from store.sqlite.ops import to_base36
from tests.store.postgres_fixtures import (
    Cluster,
    drop_database,
    make_cluster,
    new_database,
    remove_cluster,
    settings_for,
)
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
ALICE = Scope("default", "alice")


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster of this test's own (it stops and kills it)."""
    cluster = make_cluster("-c fsync=off")
    yield cluster
    remove_cluster(cluster)


async def test_concurrent_openers_migrate_once() -> None:
    url = (await new_database()).rsplit("/", 1)[0] + "/postgres"
    name = f"race_{id(url)}"
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    target = url.rsplit("/", 1)[0] + f"/{name}"
    engines = [PostgresEngine(settings_for(target)) for _ in range(6)]
    async with anyio.create_task_group() as tg:
        for engine in engines:
            tg.start_soon(engine.open)
    try:
        async with await psycopg.AsyncConnection.connect(target) as conn:
            cur = await conn.execute("SELECT version FROM hero_schema")
            assert await cur.fetchall() == [(SCHEMA_VERSION,)]
        conv = await engines[0].create(Kind.CONVERSATION, ALICE, {"title": "t", "is_archived": False})
        assert await engines[5].get(Kind.CONVERSATION, ALICE, conv["sid"]) == conv
    finally:
        for engine in engines:
            await engine.aclose()


async def test_down_names_host_and_port_then_recovers(own_cluster: Cluster) -> None:
    settings = settings_for(own_cluster.url("postgres"), timeout_s=2.0, retries=1)
    async with PostgresEngine(settings) as engine:
        conv = await engine.create(Kind.CONVERSATION, ALICE, {"title": "t", "is_archived": False})
        own_cluster.stop()
        with pytest.raises(StoreUnavailable) as info:
            await engine.get(Kind.CONVERSATION, ALICE, conv["sid"])
        assert f"127.0.0.1:{own_cluster.port}" in str(info.value)
        assert engine.counters()["unreachable"] >= 1
        own_cluster.start()

        async def read_back() -> bool:
            try:
                got = await engine.get(Kind.CONVERSATION, ALICE, conv["sid"])
            except StoreUnavailable:
                return False
            assert got == conv
            return True

        await until(read_back, timeout=30, interval=0.1, what="the restarted server to answer")
        assert engine.gauges()["open"] >= 1
        shown = TurnMetrics(store_engine=engine).render_lines()
    unreachable = engine.counters()["unreachable"]
    assert f'hero_store_calls_unreachable_total{{engine="postgres"}} {unreachable}' in shown
    assert any(
        line.startswith('hero_store_attempts_failed_total{engine="postgres",reason="connection"} ')
        for line in shown
    )
    assert any(
        line.startswith('hero_store_pool_connections{engine="postgres",state="in_use"} ') for line in shown
    )
    assert any(
        line.startswith('hero_store_pool_connections{engine="postgres",state="open"} ') for line in shown
    )


async def test_open_while_down_is_unavailable_without_the_password(tmp_path: Path) -> None:
    with socketless_port() as port:
        url = f"postgresql://hero:s3cret-pw@127.0.0.1:{port}/db?connect_timeout=1"
        with pytest.raises(StoreUnavailable) as info:
            await PostgresEngine(settings_for(url, timeout_s=1.0, secret="other-secret")).open()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "s3cret" not in str(info.value) and "other-secret" not in str(info.value)


class socketless_port:
    """A loopback port nothing listens on (bound, not listening, for the test's duration)."""

    def __enter__(self) -> int:
        import socket  # noqa: PLC0415

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


async def test_kill9_during_commits_loses_and_duplicates_nothing(own_cluster: Cluster) -> None:
    """Writers append keyed messages while the server is killed (-9) and restarted twice: every
    append that was acknowledged is there, and no request key is stored twice."""
    settings = settings_for(own_cluster.url("postgres"), timeout_s=3.0, retries=4)
    acked: set[str] = set()
    async with PostgresEngine(settings) as engine:
        conv = await engine.create(Kind.CONVERSATION, ALICE, {"title": "t", "is_archived": False})

        async def writer(w: int, stop: anyio.Event) -> None:
            n = 0
            while not stop.is_set():
                key = f"w{w}-{n}"
                fields = {"conversation_id": conv["sid"], "role": "user", "content": key, "channel": "cli"}
                try:
                    await engine.create(Kind.MESSAGE, ALICE, fields, request_key=key)
                    acked.add(key)
                    n += 1
                except StoreUnavailable:
                    await anyio.sleep(0.05)  # the same key is tried again: it may have been stored

        async def thirty_more_acked() -> None:
            before = len(acked)
            await until(lambda: len(acked) >= before + 30, timeout=60, what="30 more acknowledged writes")

        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            for w in range(4):
                tg.start_soon(writer, w, stop)
            # at least two kills, and more until one has met a batch in flight (a kill between two
            # batches is only noticed by the pool, silently): the faults this test is about
            kills = 0
            while kills < 2 or engine.counters()["connection"] + engine.counters()["unknown_commit"] == 0:
                assert kills < 10, "ten kills of the server and none met a batch in flight"
                kills += 1
                await thirty_more_acked()
                # from a worker thread: the writers keep running (and have batches in flight) while
                # the server dies; a kill in the event loop's thread would wait for them to be answered
                await anyio.to_thread.run_sync(own_cluster.kill9)
                await anyio.to_thread.run_sync(_restart, own_cluster)
            await thirty_more_acked()
            stop.set()
        rows = await _all_messages(own_cluster.url("postgres"))
    keys = [k for k, _ in rows]
    assert len(keys) == len(set(keys)), "a request key was stored twice"
    assert acked <= set(keys), f"acknowledged writes lost: {sorted(acked - set(keys))[:5]}"
    assert [seq for _, seq in sorted(rows, key=lambda r: r[1])] == list(range(1, len(rows) + 1))
    assert engine.counters()["connection"] + engine.counters()["unknown_commit"] >= 1


def _restart(cluster: Cluster) -> None:
    cluster.start()


async def _all_messages(url: str) -> list[tuple[str, int]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT request_key, seq FROM messages")
        return [(str(k), int(s)) for k, s in await cur.fetchall()]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(d: Path) -> None:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=hero test CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
             "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName = IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.cnf", "-out", "server.crt", cwd=d)  # fmt: skip


async def test_tls_with_verify_full(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    _make_ca(certs)
    cluster = make_cluster("-c fsync=off")
    try:
        for name in ("server.crt", "server.key"):
            (cluster.data / name).write_bytes((certs / name).read_bytes())
            (cluster.data / name).chmod(0o600)
            if cluster.as_postgres:
                subprocess.run(["chown", "postgres", str(cluster.data / name)], check=True)
        cluster.stop()
        cluster.extra = (*cluster.extra, "-c ssl=on")
        cluster.start()
        url = cluster.url("postgres", sslmode="verify-full", sslrootcert=str(certs / "ca.crt"))
        async with PostgresEngine(settings_for(url)) as engine:
            conv = await engine.create(Kind.CONVERSATION, ALICE, {"title": "tls", "is_archived": False})
            assert (await engine.get(Kind.CONVERSATION, ALICE, conv["sid"]) or {})["title"] == "tls"
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cur = await conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert await cur.fetchone() == (True,)
        # a certificate for another name is refused under verify-full
        wrong = url.replace("127.0.0.1", "localhost")
        with pytest.raises(StoreUnavailable):
            await PostgresEngine(settings_for(wrong, timeout_s=2.0)).open()
    finally:
        remove_cluster(cluster)


async def test_a_version_1_database_gains_the_tail_digest_column() -> None:
    """A database main's first postgres schema wrote (migration 1 alone) opens and upgrades in place:
    ``tail_digest`` becomes a hot column filled from the records' JSON, found by its index."""
    admin = (await new_database()).rsplit("/", 1)[0] + "/postgres"
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute("CREATE DATABASE schema_v1 TEMPLATE template0")
    url = admin.rsplit("/", 1)[0] + "/schema_v1"
    try:
        assert not any("tail_digest" in sql for sql in MIGRATIONS[0])  # migration 1 is main's schema
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(VERSION_TABLE)
            for sql in MIGRATIONS[0]:
                await conn.execute(sql)
            await conn.execute("INSERT INTO hero_schema VALUES (1, 1)")
            for sid, data in (("0001", '{"title":"old","tail_digest":"d7"}'), ("0002", '{"title":"older"}')):
                await conn.execute(
                    "INSERT INTO conversations (sid, context, user_id, created_at, updated_at, is_archived, "
                    "message_count, data, fts) VALUES (%s, 'default', 'alice', 1, 1, 0, 0, %s, "
                    "to_tsvector('simple', %s::json->>'title'))",
                    (sid, data, data),
                )
        async with PostgresEngine(settings_for(url)) as engine:
            store = Store(engine)
            found = await store.conversations.find_by_tail_digest(ALICE, "d7")
            assert found is not None and (found.sid, found.title) == ("0001", "old")
            assert (await store.conversations.get(ALICE, "0002")).tail_digest == ""
            await store.conversations.set_tail_digest(ALICE, "0002", "d8")
            found = await store.conversations.find_by_tail_digest(ALICE, "d8")
            assert found is not None and found.sid == "0002"
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            cur = await conn.execute("SELECT version FROM hero_schema")
            assert await cur.fetchall() == [(SCHEMA_VERSION,)] == [(3,)]
            cur = await conn.execute("SELECT sid, tail_digest FROM conversations ORDER BY sid")
            assert await cur.fetchall() == [("0001", "d7"), ("0002", "d8")]
            await conn.execute("SET enable_seqscan = off")  # two rows: make the planner show the index
            cur = await conn.execute(
                "EXPLAIN SELECT sid FROM conversations WHERE context = 'default' AND user_id = 'alice' "
                "AND tail_digest = 'd8' ORDER BY updated_at DESC, sid DESC LIMIT 1"
            )
            plan = " ".join(str(row[0]) for row in await cur.fetchall())
    finally:
        await drop_database(url)
    assert "conversations_tail" in plan, plan


async def test_a_version_2_database_gets_the_plpgsql_hero_sid_with_the_same_sids() -> None:
    """A database main's schema (f7400c8: migrations 1 and 2) wrote upgrades in place to migration 3:
    ``hero_sid`` becomes PL/pgSQL, gives the text the SQL version gave for every ``n`` below 36^4
    (all compared on the server) and the embedded engine's sid above, where the old one cut it to 4
    characters; new records continue the counter."""
    admin = (await new_database()).rsplit("/", 1)[0] + "/postgres"
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute("CREATE DATABASE schema_v2 TEMPLATE template0")
    url = admin.rsplit("/", 1)[0] + "/schema_v2"
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(VERSION_TABLE)
            for sql in (*MIGRATIONS[0], *MIGRATIONS[1]):
                await conn.execute(sql)
            await conn.execute("INSERT INTO hero_schema VALUES (1, 2)")
            old = next(sql for sql in MIGRATIONS[0] if "FUNCTION hero_sid" in sql)
            await conn.execute(old.replace("FUNCTION hero_sid", "FUNCTION hero_sid_v1"))
        async with PostgresEngine(settings_for(url)) as engine:
            store = Store(engine)
            first = await store.conversations.create(ALICE, "one", channel="cli")
            second = await store.conversations.create(ALICE, "two", channel="cli")
            assert (first.sid, second.sid) == ("0001", "0002")
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            cur = await conn.execute("SELECT version FROM hero_schema")
            assert await cur.fetchall() == [(SCHEMA_VERSION,)] == [(3,)]
            cur = await conn.execute(
                "SELECT prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql') FROM pg_proc "
                "WHERE proname = 'hero_sid'"
            )
            assert await cur.fetchall() == [(True,)]
            below = [
                *range(-2, 2000),
                *range(2000, 36**4, 997),
                *(36**k + d for k in (1, 2, 3) for d in (-1, 1)),
            ]
            cur = await conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE hero_sid(v) IS DISTINCT FROM hero_sid_v1(v)) "
                "FROM unnest(%s::bigint[]) AS v",
                ([*below, 36**4 - 1],),
            )
            assert await cur.fetchall() == [(len(below) + 1, 0)]
            # from 36^4 on the old one cut the sid to 4 characters: the new one is the embedded engine's
            beyond = [36**k + d for k in range(4, 13) for d in (-1, 0, 1)] + [2**63 - 1]
            cur = await conn.execute("SELECT v, hero_sid(v) FROM unnest(%s::bigint[]) AS v", (beyond,))
            assert await cur.fetchall() == [(n, to_base36(n)) for n in beyond]
            cur = await conn.execute("SELECT hero_sid_v1(1679616), hero_sid(1679616)")
            assert await cur.fetchall() == [("1000", "10000")]
    finally:
        await drop_database(url)
