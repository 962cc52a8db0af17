"""``/stop`` wherever it lands: two real ``hero-agent serve`` processes on one store.

A turn runs on replica 0; ``/stop`` for its conversation is sent to replica 1, which does not run it.
Replica 1 writes a stop request against the turn's lease; replica 0 finds it within a second and
cancels the turn, which ends as ``cancelled`` with its partial reply stored ``interrupted``. Run on
one PostgreSQL database and on one embedded data dir (two processes on one machine).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from config.loader import load_settings
from store import Scope, open_store
from tests.channels.replicas import Replica, parse_sse, replicas, store_toml
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_text
from tests.store.postgres_fixtures import drop_database, new_database, stop_cluster

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

LONG = " ".join(f"word{i}" for i in range(100))


@pytest.fixture(scope="module", autouse=True)
def _cluster() -> Iterator[None]:
    yield
    stop_cluster()


@pytest.fixture(params=["postgres", "embedded"])
async def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "postgres":
        url = await new_database()
        try:
            yield store_toml("postgres", url)
        finally:
            await drop_database(url)
    else:
        yield store_toml("embedded", str(tmp_path / "shared-data"))


async def _metric(client: httpx.AsyncClient, r: Replica, name: str) -> str:
    text = (await client.get(f"{r.base_url}/metrics")).text
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


async def test_stop_sent_to_the_other_replica_cancels_the_turn(tmp_path: Path, shared_store: str) -> None:
    async with FakeOpenAI() as fake:
        fake.enqueue(reply_text(LONG, chunks=100, chunk_delay=0.2))  # ~20 s unless stopped
        async with (
            replicas(tmp_path, 2, shared_store, fake.base_url) as (runner, other),
            httpx.AsyncClient(timeout=60) as client,
        ):
            conv = (await client.post(f"{runner.base_url}/api/conversations", json={})).json()
            cid = conv["id"]
            turn_events: list[tuple[str, dict[str, object]]] = []
            stop_events: list[tuple[str, dict[str, object]]] = []
            first_delta = anyio.Event()

            async def run_turn() -> None:
                name = ""
                async with client.stream(
                    "POST", f"{runner.base_url}/api/chat", json={"message": "tell", "conversation_id": cid}
                ) as resp:
                    assert resp.status_code == 200
                    async for line in resp.aiter_lines():
                        if line.startswith("event:"):
                            name = line[6:].strip()
                        elif line.startswith("data:"):
                            turn_events.append((name, json.loads(line[5:])))
                            if name == "delta":
                                first_delta.set()

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(run_turn)
                    await first_delta.wait()
                    resp = await client.post(
                        f"{other.base_url}/api/chat", json={"message": "/stop", "conversation_id": cid}
                    )
                    assert resp.status_code == 200, resp.text
                    stop_events = parse_sse(resp.text)
            assert stop_events[-1][0] == "command", stop_events
            assert stop_events[-1][1]["data"] == {"stopped": True}
            assert turn_events[-1][0] == "error" and turn_events[-1][1]["code"] == "cancelled", turn_events
            written = await _metric(client, other, "hero_stop_requests_total")
            seen = await _metric(client, runner, "hero_stop_requests_total")
            assert 'hero_stop_requests_total{event="written"} 1' in written
            assert 'hero_stop_requests_total{event="seen"} 1' in seen
            # the conversation takes the next turn at once, on either replica
            fake.enqueue(reply_text("after the stop"))
            resp = await client.post(
                f"{other.base_url}/api/chat", json={"message": "again", "conversation_id": cid}
            )
            assert parse_sse(resp.text)[-1][0] == "done"
        settings = load_settings(str(runner.config), env=runner.env)
        async with open_store(settings) as store:
            msgs = (await store.messages.list(Scope("default", settings.web_local_user), cid)).items
    assert [(m.seq, m.role, m.status) for m in msgs] == [
        (1, "user", "complete"),
        (2, "assistant", "interrupted"),
        (3, "user", "complete"),
        (4, "assistant", "complete"),
    ]
    assert 0 < len(msgs[1].content) < len(LONG)
