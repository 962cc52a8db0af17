"""``hero-agent serve`` as a real subprocess: chat through the web, SIGTERM mid-turn, check the store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import Process

from config.loader import load_settings
from store import Scope, open_store
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_text
from tests.fakes.telegram_server import TOKEN as BOT_TOKEN
from tests.fakes.telegram_server import FakeBotAPI
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

HERO_AGENT = Path(sys.executable).parent / "hero-agent"
SLOW = " ".join(f"word{i}" for i in range(40))
DEADLINE_S = 1.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    process: Process
    base_url: str
    config: Path
    env: dict[str, str]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _write_config(tmp_path: Path, port: int, telegram: str = "[telegram]\nenabled = false\n") -> Path:
    config = tmp_path / "hero-agent.toml"
    config.write_text(
        f"""
{telegram}
[web]
enabled = true
host = "127.0.0.1"
port = {port}
shutdown_deadline_s = {DEADLINE_S}

[llm]
model = "fake-model"
max_retries = 0

[memory]
enabled = false
"""
    )
    return config


@asynccontextmanager
async def run_daemon(
    tmp_path: Path, fake: FakeOpenAI, port: int | None = None, telegram: str | None = None
) -> AsyncIterator[Daemon]:
    port = port or _free_port()
    config = _write_config(tmp_path, port, *([telegram] if telegram else []))
    env = {
        **os.environ,
        "HERO_AGENT_DATA_DIR": str(tmp_path / "data"),
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-test",
        "HERO_AGENT_LOGGING__FORMAT": "json",
    }
    # output goes to a file: a pipe nobody drains would block the daemon once its buffer is full
    log = tmp_path / "daemon.log"
    with log.open("wb") as sink:
        process = await anyio.open_process(
            [str(HERO_AGENT), "serve", "--config", str(config)], env=env, stdout=sink, stderr=sink
        )
        try:
            yield Daemon(process, f"http://127.0.0.1:{port}", config, env, log)
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
                await process.aclose()


async def _wait_healthy(daemon: Daemon) -> None:
    async with httpx.AsyncClient(base_url=daemon.base_url, timeout=2) as client:

        async def healthy() -> bool:
            assert daemon.process.returncode is None, "the daemon exited while starting"
            try:
                return (await client.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await until(healthy, timeout=30, interval=0.05, what="the daemon to answer /healthz")


Events = list[tuple[str, dict[str, object]]]


async def _stream_after_sigterm(daemon: Daemon, message: str) -> tuple[Events, int]:
    """Chat, SIGTERM the daemon at the first delta, read the stream to its end; (events, exit code)."""
    events: Events = []
    name = ""
    async with (
        httpx.AsyncClient(base_url=daemon.base_url, timeout=30) as client,
        client.stream("POST", "/api/chat", json={"message": message}) as resp,
    ):
        assert resp.status_code == 200
        with anyio.fail_after(DEADLINE_S + 20):
            async for line in resp.aiter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    events.append((name, json.loads(line[5:])))
                    if name == "delta" and sum(1 for n, _ in events if n == "delta") == 1:
                        daemon.process.send_signal(signal.SIGTERM)
    with anyio.fail_after(DEADLINE_S + 20):
        code = await daemon.process.wait()
    return events, code


async def _stored(daemon: Daemon, conversation_id: str, user: str = "") -> list[tuple[str, str, str]]:
    """The stored messages; ``user`` defaults to the page's local user (the daemon's OS user)."""
    settings = load_settings(str(daemon.config), env=daemon.env)
    async with open_store(settings) as store:
        scope = Scope("default", user or settings.web_local_user)
        msgs = (await store.messages.list(scope, conversation_id)).items
    return [(m.role, m.status, m.content) for m in msgs]


async def test_sigterm_mid_turn_interrupts_after_the_deadline(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        fake.enqueue(reply_text(SLOW, chunks=40, chunk_delay=0.25))  # ~10 s: longer than the deadline
        async with run_daemon(tmp_path, fake) as daemon:
            await _wait_healthy(daemon)
            events, code = await _stream_after_sigterm(daemon, "a long story please")
    assert code == 0, daemon.output()
    assert events[0][0] == "start" and events[-1][0] == "error"
    assert events[-1][1]["code"] == "shutdown"
    conv = str(events[0][1]["conversation_id"])
    stored = await _stored(daemon, conv)
    assert stored[0] == ("user", "complete", "a long story please")
    assert stored[-1][0:2] == ("assistant", "interrupted")
    assert 0 < len(stored[-1][2]) < len(SLOW)


async def test_sigterm_lets_a_short_turn_finish(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        fake.enqueue(reply_text("short and sweet reply", chunks=4, chunk_delay=0.1))
        async with run_daemon(tmp_path, fake) as daemon:
            await _wait_healthy(daemon)
            events, code = await _stream_after_sigterm(daemon, "quick one")
    assert code == 0, daemon.output()
    assert events[-1][0] == "done"
    stored = await _stored(daemon, str(events[0][1]["conversation_id"]))
    assert stored == [("user", "complete", "quick one"), ("assistant", "complete", "short and sweet reply")]


async def test_port_in_use_fails_fast_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        async with FakeOpenAI() as fake, run_daemon(tmp_path, fake, port=port) as daemon:
            with anyio.fail_after(30):
                code = await daemon.process.wait()
    assert code == 1, daemon.output()
    lines = [line for line in daemon.output().splitlines() if not line.startswith("{")]
    expected = f"hero-agent: error: web: cannot listen on 127.0.0.1:{port}: the address is already in use"
    assert lines == [expected]


async def test_web_and_telegram_in_one_process(tmp_path: Path) -> None:
    async with FakeOpenAI() as llm, FakeBotAPI() as bot:
        telegram = (
            f'[telegram]\nenabled = true\ntoken = "{BOT_TOKEN}"\napi_base_url = "{bot.base_url}"\n'
            "allowed_users = [5]\npoll_timeout_s = 1\n"
        )
        async with run_daemon(tmp_path, llm, telegram=telegram) as daemon:
            await _wait_healthy(daemon)
            bot.push_update(bot.text_update(chat_id=5, user_id=5, text="hello bot"))
            await bot.wait_for(lambda: any("echo: hello bot" in m for m in bot.messages_in(5)), timeout=30)
            async with httpx.AsyncClient(base_url=daemon.base_url, timeout=30) as client:
                resp = await client.post("/api/chat", json={"message": "hello web"})
            assert resp.status_code == 200 and "event: done" in resp.text
            web_conv = json.loads(resp.text.split("data:", 1)[1].split("\n", 1)[0])["conversation_id"]
            daemon.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(DEADLINE_S + 30):
                code = await daemon.process.wait()
    assert code == 0, daemon.output()
    settings = load_settings(str(daemon.config), env=daemon.env)
    async with open_store(settings) as store:
        (tg_conv,) = (await store.conversations.list(Scope("default", "tg:5"))).items
        tg_msgs = (await store.messages.list(Scope("default", "tg:5"), tg_conv.sid)).items
    assert [(m.role, m.channel, m.content) for m in tg_msgs] == [
        ("user", "telegram", "hello bot"),
        ("assistant", "telegram", "echo: hello bot"),
    ]
    assert await _stored(daemon, web_conv) == [
        ("user", "complete", "hello web"),
        ("assistant", "complete", "echo: hello web"),
    ]


async def test_a_channel_that_cannot_start_stops_the_others(tmp_path: Path) -> None:
    async with FakeOpenAI() as llm, FakeBotAPI() as bot:
        telegram = (
            f'[telegram]\nenabled = true\ntoken = "999:wrong-token-abcdefghijklmnopqrstuvwxyz"\n'
            f'api_base_url = "{bot.base_url}"\nallowed_users = [5]\n'
        )
        async with run_daemon(tmp_path, llm, telegram=telegram) as daemon:
            with anyio.fail_after(60):
                code = await daemon.process.wait()
    assert code == 1, daemon.output()
    lines = [line for line in daemon.output().splitlines() if not line.startswith("{")]
    assert len(lines) == 1 and lines[0].startswith("hero-agent: error: telegram"), lines
    assert "wrong-token" not in daemon.output()  # the token never reaches the output
    events = [json.loads(line)["event"] for line in daemon.output().splitlines() if line.startswith("{")]
    # the web channel had started and was stopped again before the exit
    assert events.index("daemon.channel_started") < events.index("daemon.channel_failed")
    assert "web.stopped" in events


@pytest.mark.parametrize("victim", ["web", "webhook"])
async def test_a_server_that_dies_after_start_stops_the_daemon_with_exit_1(
    tmp_path: Path, victim: str
) -> None:
    """The kernel closes a server's listening socket under it (``ss -K``, what an operator's tool or a
    network namespace teardown does): uvicorn runs on without accepting anything, which is the death a
    daemon must not swallow. Both servers are checked: the web channel's and the Telegram webhook's. A
    Bot API outage just before is retried, not fatal.

    ``ss -K`` is the honest way to kill the server from outside without touching our code: it destroys
    the socket in the kernel (SOCK_DESTROY), as a real failure would; nothing in the process is patched."""
    ss = shutil.which("ss")
    assert ss is not None, "the test needs ss (Debian package iproute2; ./dev.sh installs it)"
    port, hook_port = _free_port(), _free_port()
    async with FakeOpenAI() as llm, FakeBotAPI() as bot:
        telegram = (
            f'[telegram]\nenabled = true\ntoken = "{BOT_TOKEN}"\napi_base_url = "{bot.base_url}"\n'
            "allowed_users = [5]\npoll_timeout_s = 1\nwatchdog_backoff_s = 0.1\n"
        )
        if victim == "webhook":
            telegram += (
                'mode = "webhook"\nwebhook_url = "https://bot.example.org/hook"\n'
                f'webhook_secret = "a-secret-for-tests"\nwebhook_port = {hook_port}\n'
            )
        async with run_daemon(tmp_path, llm, port=port, telegram=telegram) as daemon:
            await _wait_healthy(daemon)
            if victim == "web":
                # an outage of the Bot API is retried: the daemon runs on and answers afterwards
                bot.inject_error("getUpdates", error_code=502, times=3)
                await bot.wait_for(lambda: bot.errors_sent["getUpdates"] == 3, timeout=30)
                bot.push_update(bot.text_update(chat_id=5, user_id=5, text="after the outage"))
                await bot.wait_for(lambda: "echo: after the outage" in bot.messages_in(5), timeout=30)
            else:
                await bot.wait_for(lambda: bot.webhook.get("url"), timeout=30)
            assert daemon.process.returncode is None
            target = port if victim == "web" else hook_port
            # only the socket listening on this exact address (the daemon's): never another
            # process's, e.g. a parallel test's on the same port number of another address
            killed = await anyio.run_process(
                [ss, "-K", "-t", "state", "listening", "src", f"127.0.0.1:{target}"], check=False
            )
            assert str(target) in killed.stdout.decode(), killed.stdout.decode() + killed.stderr.decode()
            with anyio.fail_after(30):
                code = await daemon.process.wait()
    output = daemon.output()
    assert code == 1, output
    lines = [line for line in output.splitlines() if not line.startswith("{")]
    what = "web: the server" if victim == "web" else "telegram: the webhook server"
    assert lines[-1] == f"hero-agent: error: {what} on 127.0.0.1:{target}: its listening socket was closed"
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    crashed = [e["channel"] for e in events if e["event"] == "daemon.channel_crashed"]
    assert crashed == ["web" if victim == "web" else "telegram"]
    # the other channel was stopped the orderly way before the exit
    other = "telegram.stopped" if victim == "web" else "web.stopped"
    assert names.index("daemon.channel_crashed") < names.index(other)
    assert "daemon.stopped" not in names
    # asyncio's busy accept loop on the dead socket logged one traceback, not hundreds
    assert output.count("Exception in callback") <= 1
