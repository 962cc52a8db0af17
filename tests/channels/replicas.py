"""Several real ``hero-agent serve`` processes on one store: the harness of the replica tests.

Each :class:`Replica` is the real console script of the venv, with its own config (its own web port)
and a shared store: one PostgreSQL database, one embedded data dir, or one ``osis serve`` URL. The
model is a fake OpenAI server of ``tests/fakes`` on 127.0.0.1, shared by every replica.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import Process

from tests.waiting import until

HERO_AGENT = Path(sys.executable).parent / "hero-agent"
Events = list[tuple[str, dict[str, Any]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def store_toml(engine: str, where: str) -> str:
    """The ``[store]`` section: ``where`` is the postgres URL, the embedded data dir or the OSIS URL."""
    if engine == "embedded":
        return f'[store]\nengine = "embedded"\npath = "{where}"\n'
    return f'[store]\nengine = "{engine}"\nurl = "{where}"\ntimeout_s = 5\nretries = 2\n'


@dataclass
class Replica:
    name: str
    process: Process
    port: int
    config: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        """The daemon's JSON log lines whose event is ``name``."""
        out = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if rec.get("event") == name:
                        out.append(rec)
        return out


@asynccontextmanager
async def replica(
    tmp_path: Path,
    name: str,
    store: str,
    llm_url: str,
    *,
    extra: str = "",
    web: bool = True,
    port: int | None = None,
) -> AsyncIterator[Replica]:
    """One ``hero-agent serve`` with ``store`` (a ``[store]`` section) and ``extra`` TOML; killed on
    exit if still running."""
    port = port or free_port()
    home = tmp_path / name
    home.mkdir(parents=True, exist_ok=True)
    config = home / "hero-agent.toml"
    config.write_text(
        f"""{store}
[web]
enabled = {"true" if web else "false"}
host = "127.0.0.1"
port = {port}
shutdown_deadline_s = 2

[llm]
model = "fake-model"
max_retries = 0

[memory]
enabled = false
{extra}
"""
    )
    env = {
        **os.environ,
        "OPENAI_BASE_URL": llm_url,
        "OPENAI_API_KEY": "sk-test",
        "HERO_AGENT_LOGGING__FORMAT": "json",
    }
    if 'engine = "embedded"' not in store:
        # nothing of the shared store is local, but keep any default data dir inside the test's tmp
        env["HERO_AGENT_DATA_DIR"] = str(home / "data")
    else:
        env.pop("HERO_AGENT_DATA_DIR", None)  # it would override the shared store.path
    log = home / "daemon.log"
    with log.open("ab") as sink:
        process = await anyio.open_process(
            [str(HERO_AGENT), "serve", "--config", str(config)], env=env, stdout=sink, stderr=sink
        )
        try:
            yield Replica(name, process, port, config, log, env)
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
                await process.aclose()


@asynccontextmanager
async def replicas(
    tmp_path: Path, count: int, store: str, llm_url: str, *, extra: str = ""
) -> AsyncIterator[list[Replica]]:
    """``count`` replicas on one store, each answering ``/healthz``."""
    async with AsyncExitStack() as stack:
        started = [
            await stack.enter_async_context(replica(tmp_path, f"r{i}", store, llm_url, extra=extra))
            for i in range(count)
        ]
        for r in started:
            await wait_healthy(r)
        yield started


async def wait_healthy(r: Replica, timeout: float = 60) -> None:
    async with httpx.AsyncClient(base_url=r.base_url, timeout=2) as client:

        async def healthy() -> bool:
            assert r.process.returncode is None, f"{r.name} exited while starting:\n{r.output()}"
            try:
                return (await client.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await until(healthy, timeout=timeout, interval=0.05, what=f"{r.name} to answer /healthz")


def parse_sse(text: str) -> Events:
    events: Events = []
    name = ""
    for line in text.splitlines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line[5:])))
    return events


async def chat(
    client: httpx.AsyncClient, base_url: str, message: str, conversation_id: str | None = None
) -> Events:
    """One ``POST /api/chat`` read to its end; the SSE events (an HTTP error is one ``http`` event)."""
    body: dict[str, Any] = {"message": message}
    if conversation_id:
        body["conversation_id"] = conversation_id
    resp = await client.post(f"{base_url}/api/chat", json=body)
    if resp.status_code != 200:
        return [("http", {"status": resp.status_code, "text": resp.text})]
    return parse_sse(resp.text)


def final(events: Events) -> tuple[str, dict[str, Any]]:
    """The last event: ``done`` or ``error`` (with its ``code``)."""
    assert events, "no events"
    return events[-1]


@asynccontextmanager
async def osis_server(tmp_path: Path, name: str, store: str) -> AsyncIterator[str]:
    """A real ``hero-agent osis serve`` in front of ``store`` (a ``[store]`` section); yields the
    ``store.url`` the daemons use. Killed on exit."""
    port = free_port()
    home = tmp_path / name
    home.mkdir(exist_ok=True)
    config = home / "osis.toml"
    config.write_text(store)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERO_AGENT_", "OSIS_"))}
    env["HERO_AGENT_DATA_DIR"] = str(home / "data")
    rpc = f"http://127.0.0.1:{port}/hero_osis_ai/rpc"
    with (home / "osis.log").open("ab") as sink:
        process = await anyio.open_process(
            [str(HERO_AGENT), "--config", str(config), "osis", "serve", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=sink,
        )
        try:
            async with httpx.AsyncClient(timeout=2) as http:

                async def answers() -> bool:
                    assert process.returncode is None, (home / "osis.log").read_text()
                    try:
                        await http.post(rpc, json={"jsonrpc": "2.0", "id": 1, "method": "rpc.discover"})
                    except httpx.TransportError:
                        return False
                    return True

                await until(answers, timeout=60, interval=0.05, what="osis serve to answer")
            yield f"http://127.0.0.1:{port}/hero_osis"
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
                await process.aclose()


def check_turns(messages: list[Any], sent: list[str]) -> None:
    """One conversation's stored messages after turns of plain echo answers: seq 1..N without a gap,
    user and assistant alternating (turns never interleaved), each answer the echo of the message
    before it, and every sent message stored exactly once."""
    assert [m.seq for m in messages] == list(range(1, len(messages) + 1)), "seq has a gap"
    users = [m for m in messages if m.role == "user"]
    assert sorted(m.content for m in users) == sorted(sent), "a message was lost or stored twice"
    for user, answer in zip(messages[::2], messages[1::2], strict=True):
        assert (user.role, answer.role) == ("user", "assistant"), "turns interleaved"
        assert answer.content == f"echo: {user.content}", "an answer belongs to another message"
