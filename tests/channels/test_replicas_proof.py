"""Proof that several ``hero-agent serve`` on one PostgreSQL database behave as one service.

* three daemons, requests spread over them, concurrent turns on one conversation sent to different
  daemons: turns never interleave, seq is gap-free, every acknowledged message is stored once;
* kill -9 of one daemon mid-turn: the others keep serving, and the conversation it held takes its
  next turn (on another daemon) within a deadline, its cut turn marked ``interrupted``;
* PostgreSQL killed and restarted mid-run: requests during the outage fail with a clear
  ``store_unavailable``, the daemons recover by themselves, nothing acknowledged is lost or doubled.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import psycopg
import pytest

from config.loader import load_settings
from store import INTERRUPTED_TYPE, Message, Scope, open_store
from tests.channels.replicas import Events, Replica, chat, check_turns, final, replicas, store_toml
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_text
from tests.store.postgres_fixtures import (
    Cluster,
    drop_database,
    make_cluster,
    new_database,
    remove_cluster,
    stop_cluster,
)
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture(scope="module", autouse=True)
def _cluster() -> Iterator[None]:
    yield
    stop_cluster()


@asynccontextmanager
async def _database() -> AsyncIterator[str]:
    url = await new_database()
    try:
        yield store_toml("postgres", url)
    finally:
        await drop_database(url)


async def _new_conversation(client: httpx.AsyncClient, r: Replica) -> str:
    resp = await client.post(f"{r.base_url}/api/conversations", json={})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def _messages(r: Replica, cid: str) -> list[Message]:
    settings = load_settings(str(r.config), env=r.env)
    async with open_store(settings) as store:
        scope = Scope("default", settings.web_local_user)
        return list((await store.messages.list(scope, cid, limit=500)).items)


async def test_three_daemons_one_database_concurrent_turns_on_one_conversation(tmp_path: Path) -> None:
    async with (
        _database() as pg,
        FakeOpenAI() as fake,
        replicas(tmp_path, 3, pg, fake.base_url) as rs,
        httpx.AsyncClient(timeout=120) as client,
    ):
        shared = await _new_conversation(client, rs[0])
        own = [await _new_conversation(client, rs[i]) for i in range(3)]
        sent: dict[str, list[str]] = {cid: [] for cid in (shared, *own)}

        async def sender(n: int) -> None:
            for k in range(4):
                # the shared conversation from every daemon at once, and one conversation per sender
                for cid in (shared, own[n]):
                    text = f"s{n} k{k} {cid}"
                    events = await chat(client, rs[(n + k) % 3].base_url, text, cid)
                    assert final(events)[0] == "done", events
                    sent[cid].append(text)

        with anyio.fail_after(240):
            async with anyio.create_task_group() as tg:
                for n in range(3):
                    tg.start_soon(sender, n)
        for cid, texts in sent.items():
            check_turns(await _messages(rs[1], cid), texts)
    assert len(sent[shared]) == 12


async def test_kill_9_of_a_daemon_mid_turn_the_others_go_on(tmp_path: Path) -> None:
    async with (
        _database() as pg,
        FakeOpenAI() as fake,
        replicas(tmp_path, 3, pg, fake.base_url) as rs,
        httpx.AsyncClient(timeout=120) as client,
    ):
        victim, other, third = rs
        cid = await _new_conversation(client, victim)
        fake.enqueue(reply_text(" ".join(f"w{i}" for i in range(100)), chunks=100, chunk_delay=0.2))
        started = anyio.Event()

        async def doomed_turn() -> None:
            try:
                async with client.stream(
                    "POST", f"{victim.base_url}/api/chat", json={"message": "doomed", "conversation_id": cid}
                ) as resp:
                    async for line in resp.aiter_lines():
                        if line.startswith("event: delta"):
                            started.set()
            except httpx.HTTPError:
                pass  # the daemon died under the stream: what a client sees

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(doomed_turn)
                await started.wait()
                victim.process.send_signal(signal.SIGKILL)
        # the others serve at once, also the conversation the dead daemon held (deadline, not timing)
        elsewhere = await _new_conversation(client, third)
        assert final(await chat(client, third.base_url, "elsewhere", elsewhere))[0] == "done"
        with anyio.fail_after(60):
            events: Events = []
            while not events or final(events)[0] != "done":
                events = await chat(client, other.base_url, "next", cid)
                if final(events)[0] != "done":
                    assert final(events)[1].get("code") == "busy", events
        messages = await _messages(other, cid)
    assert [(m.role, m.status, m.content) for m in messages][0::2] == [
        ("user", "complete", "doomed"),
        ("user", "complete", "next"),
    ]
    marker, answer = messages[1], messages[3]
    assert (marker.role, marker.status, marker.message_type) == (
        "assistant",
        "interrupted",
        INTERRUPTED_TYPE,
    )
    assert (answer.role, answer.content) == ("assistant", "echo: next")


@asynccontextmanager
async def _own_cluster() -> AsyncIterator[tuple[Cluster, str]]:
    """A cluster of this test's own (it is killed and restarted) with one migrated database."""
    cluster = await anyio.to_thread.run_sync(make_cluster)
    try:
        async with await psycopg.AsyncConnection.connect(cluster.url(), autocommit=True) as conn:
            await conn.execute("CREATE DATABASE hero")
        yield cluster, cluster.url("hero")
    finally:
        await anyio.to_thread.run_sync(remove_cluster, cluster)


async def test_postgres_restarted_mid_run_clear_errors_then_recovery(tmp_path: Path) -> None:
    async with (
        _own_cluster() as (cluster, url),
        FakeOpenAI() as fake,
        replicas(tmp_path, 2, store_toml("postgres", url), fake.base_url) as rs,
        httpx.AsyncClient(timeout=120) as client,
    ):
        convs = [await _new_conversation(client, rs[n % 2]) for n in range(4)]
        acked: dict[str, list[str]] = {c: [] for c in convs}
        tried: dict[str, list[str]] = {c: [] for c in convs}
        errors: list[str] = []
        phase = {"restarted": False}
        after: dict[str, int] = {c: 0 for c in convs}

        async def sender(n: int) -> None:
            cid, k = convs[n], 0
            while after[cid] < 3:
                text = f"c{n} m{k}"
                k += 1
                tried[cid].append(text)
                events = await chat(client, rs[k % 2].base_url, text, cid)
                name, data = final(events)
                if name == "done":
                    acked[cid].append(text)
                    if phase["restarted"]:
                        after[cid] += 1
                    continue
                # the one clear failure an outage may give: as an SSE error or as the HTTP answer
                code = data.get("code") if name == "error" else _http_code(data)
                assert code in ("store_unavailable", "busy"), events
                errors.append(str(code))
                await anyio.sleep(0.05)  # a client's pause before it tries again

        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:
                for n in range(4):
                    tg.start_soon(sender, n)
                await until(
                    lambda: sum(len(a) for a in acked.values()) >= 8,
                    timeout=300,
                    interval=0.02,
                    what="8 acknowledged turns",
                )
                await anyio.to_thread.run_sync(cluster.kill9)
                await until(  # the outage is seen as a clear error
                    lambda: "store_unavailable" in errors,
                    timeout=300,
                    interval=0.02,
                    what="a store_unavailable error",
                )
                await anyio.to_thread.run_sync(cluster.start)
                phase["restarted"] = True
        for r in rs:
            assert r.process.returncode is None, r.output()  # nobody died of the outage
        for cid in convs:
            messages = await _messages(rs[0], cid)
            assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
            users = [m.content for m in messages if m.role == "user"]
            assert len(users) == len(set(users)), "a message was stored twice"
            assert set(acked[cid]) <= set(users), "an acknowledged message was lost"
            assert set(users) <= set(tried[cid])


def _http_code(data: dict[str, object]) -> str:
    import json  # noqa: PLC0415

    body = json.loads(str(data.get("text", "{}")))
    return str(body.get("error", {}).get("code", ""))
