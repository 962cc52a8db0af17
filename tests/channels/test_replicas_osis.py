"""Two ``hero-agent osis serve`` processes on one PostgreSQL database, two daemons behind each.

``osis serve`` over PostgreSQL keeps nothing of the store locally (the leases, the sid counters, the
messages are all rows of the database), so any number of them can stand in front of one database, the
way a Hero deployment scales. Four real ``hero-agent serve`` processes (engine ``osis``, two per
service) take concurrent turns on ONE conversation: the turns never interleave, seq is gap-free, every
message is stored once. Then a ``/stop`` sent through the other service stops a running turn.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import httpx
import pytest

from config.loader import load_settings
from store import Scope, open_store
from tests.channels.replicas import chat, check_turns, final, osis_server, replica, store_toml, wait_healthy
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_text
from tests.store.postgres_fixtures import drop_database, new_database, stop_cluster

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

SENDERS = 4
TURNS_EACH = 5


@pytest.fixture(scope="module", autouse=True)
def _cluster() -> Iterator[None]:
    yield
    stop_cluster()


async def test_two_osis_services_on_one_database_serve_four_daemons(tmp_path: Path) -> None:
    url = await new_database()
    try:
        async with FakeOpenAI() as fake, AsyncExitStack() as stack:
            pg = store_toml("postgres", url)
            services = [
                await stack.enter_async_context(osis_server(tmp_path, f"osis{i}", pg)) for i in range(2)
            ]
            daemons = [
                await stack.enter_async_context(
                    replica(tmp_path, f"d{i}", store_toml("osis", services[i % 2]), fake.base_url)
                )
                for i in range(4)
            ]
            for d in daemons:
                await wait_healthy(d)
            client = await stack.enter_async_context(httpx.AsyncClient(timeout=120))
            cid = (await client.post(f"{daemons[0].base_url}/api/conversations", json={})).json()["id"]
            sent: list[str] = []

            async def sender(n: int) -> None:
                for k in range(TURNS_EACH):
                    text = f"from {n} turn {k}"
                    events = await chat(client, daemons[(n + k) % 4].base_url, text, cid)
                    assert final(events)[0] == "done", events
                    sent.append(text)

            with anyio.fail_after(240):
                async with anyio.create_task_group() as tg:
                    for n in range(SENDERS):
                        tg.start_soon(sender, n)

            # /stop through the other service: the request travels as an agentlease of the database
            fake.enqueue(reply_text(" ".join(f"w{i}" for i in range(80)), chunks=80, chunk_delay=0.2))
            ended: list[str] = []
            started = anyio.Event()

            async def long_turn() -> None:
                name = ""
                body = {"message": "long", "conversation_id": cid}
                async with client.stream("POST", f"{daemons[0].base_url}/api/chat", json=body) as resp:
                    async for line in resp.aiter_lines():
                        if line.startswith("event:"):
                            name = line[6:].strip()
                            if name == "delta":
                                started.set()
                        elif line.startswith("data:") and name == "error":
                            ended.append(json.loads(line[5:])["code"])

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(long_turn)
                    await started.wait()
                    stop = await chat(client, daemons[1].base_url, "/stop", cid)
            assert final(stop)[1]["data"] == {"stopped": True}
            assert ended == ["cancelled"]

            settings = load_settings(str(daemons[0].config), env=daemons[0].env)
            async with open_store(settings) as store:
                scope = Scope("default", settings.web_local_user)
                messages = (await store.messages.list(scope, cid, limit=500)).items
    finally:
        await drop_database(url)
    assert len(sent) == SENDERS * TURNS_EACH
    check_turns(messages[:-2], sent)
    assert [(m.role, m.status) for m in messages[-2:]] == [("user", "complete"), ("assistant", "interrupted")]
