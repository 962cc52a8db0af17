"""Real ``hero-agent`` processes on a generated hero_osis (the strict generated-CRUD server, core mode):
``ask`` (with ``OSIS_CONTEXT``), ``serve`` with the web and Telegram channels, ``export``/``import``
and ``migrate-sqlite``. Fakes only at the network seam (LLM, Bot API, the OSIS server)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from channels.serving import unix_listening_socket
from config import StoreSettings
from store.api.store import Store
from store.engine import ListQuery
from store.models import Kind, Scope
from store.osis.client import OsisEngine
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.osis_generated import GeneratedOsis
from tests.fakes.telegram_server import TOKEN, FakeBotAPI
from tests.store.osis_fixtures import HERO_AGENT, client_settings, free_port, subprocess_env, wait_exit
from tests.store.test_migrate_sqlite import build_legacy
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
TG_ALICE = 111


def _config(tmp_path: Path, llm_url: str, extra: str = "") -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f"""
[llm]
base_url = "{llm_url}"
api_key = "sk-test"
model = "fake-model"
max_retries = 0

[memory]
enabled = false

[web]
enabled = false
{extra}
"""
    )
    return cfg


def _env(osis: GeneratedOsis, **more: str) -> dict[str, str]:
    return {**subprocess_env(), "OSIS_URL": osis.base_url, "HERO_AGENT_LOGGING__FORMAT": "json", **more}


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HERO_AGENT, *cmd], check=False, env=env, capture_output=True, text=True, timeout=120
    )


async def _in_thread(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(lambda: _run(cmd, env))


@asynccontextmanager
async def _strict() -> AsyncIterator[GeneratedOsis]:
    with GeneratedOsis().running_in_thread() as osis:
        yield osis


async def test_ask_on_a_generated_osis_continues_in_the_osis_context(tmp_path: Path) -> None:
    async with _strict() as osis:
        with FakeOpenAI().running_in_thread() as fake:
            cfg = _config(tmp_path, fake.base_url)
            env = _env(osis, OSIS_CONTEXT="geomind")
            first = await _in_thread(["--config", str(cfg), "ask", "--user", "alice", "first question"], env)
            assert first.returncode == 0, first.stderr
            assert "echo: first question" in first.stdout
            # the start-up log says the mode and what it costs
            assert "osis.core_mode" in first.stdout + first.stderr
            second = await _in_thread(
                ["--config", str(cfg), "ask", "--user", "alice", "second question"], env
            )
            assert second.returncode == 0, second.stderr
            sent = [m["content"] for m in fake.requests[-1]["messages"] if m["role"] in ("user", "assistant")]
            assert sent[:3] == ["first question", "echo: first question", "second question"]
        assert set(osis.data) == {"geomind"}
        assert dict(osis.dropped) == {}
        async with Store(OsisEngine(client_settings(osis.base_url))) as store:
            convs = (await store.conversations.list(Scope("geomind", "alice"))).items
            assert len(convs) == 1 and convs[0].message_count == 4
            assert (await store.conversations.list(Scope("default", "alice"))).items == []


async def test_serve_with_web_and_telegram_on_a_generated_osis(tmp_path: Path) -> None:
    port = free_port()
    async with _strict() as osis, FakeBotAPI() as tg:
        with FakeOpenAI().running_in_thread() as fake:
            extra = f"""
[telegram]
enabled = true
api_base_url = "{tg.base_url}"
allowed_users = [{TG_ALICE}]
poll_timeout_s = 1
"""
            cfg = _config(tmp_path, fake.base_url, extra)
            text = cfg.read_text().replace("[web]\nenabled = false", f"[web]\nenabled = true\nport = {port}")
            cfg.write_text(text)
            env = _env(osis, TELEGRAM_BOT_TOKEN=TOKEN, HERO_AGENT_WEB__LOCAL_USER="alice")
            log = tmp_path / "daemon.log"
            with log.open("wb") as sink:
                proc = await anyio.open_process(
                    [HERO_AGENT, "--config", str(cfg), "serve"], env=env, stdout=sink, stderr=sink
                )
                try:
                    answer = await _chat(f"http://127.0.0.1:{port}", "hello web", proc)
                    assert "echo: hello web" in answer
                    tg.push_update(tg.text_update(TG_ALICE, TG_ALICE, "hello telegram"))
                    await tg.wait_for(
                        lambda: tg.messages_in(TG_ALICE) == ["echo: hello telegram"], timeout=30
                    )
                    proc.send_signal(signal.SIGTERM)
                    with anyio.fail_after(30):
                        assert await proc.wait() == 0, log.read_text()
                finally:
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()
                    await proc.aclose()
        output = log.read_text()
        assert "osis.core_mode" in output and TOKEN not in output
        assert dict(osis.dropped) == {}
        stored = [r["content"] for r in osis.data["default"]["agentmessage"].values()]
        assert {"hello web", "echo: hello web", "hello telegram", "echo: hello telegram"} <= set(stored)


async def _chat(base_url: str, message: str, proc: object) -> str:
    """POST /api/chat once the daemon is up; the streamed text."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

        async def healthy() -> bool:
            try:
                return (await client.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await until(healthy, timeout=30, interval=0.05, what="the daemon to answer /healthz")
        text = []
        async with client.stream("POST", "/api/chat", json={"message": message}) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if line.startswith("data:"):
                    data = json.loads(line[5:])
                    if isinstance(data, dict) and isinstance(data.get("text"), str):
                        text.append(data["text"])
        return "".join(text)


async def test_export_import_and_migrate_sqlite_on_a_generated_osis(tmp_path: Path) -> None:
    async with _strict() as osis:
        env = _env(osis)
        legacy = tmp_path / "legacy.db"
        build_legacy(legacy)
        migrated = await _in_thread(
            ["migrate-sqlite", str(legacy), "--context", "legacy", "--user", "carol"], env
        )
        assert migrated.returncode == 0, migrated.stderr
        assert "messages: 4 imported, 0 already present, 3 skipped" in migrated.stdout
        again = await _in_thread(
            ["migrate-sqlite", str(legacy), "--context", "legacy", "--user", "carol"], env
        )
        assert "messages: 0 imported, 4 already present" in again.stdout
        out = tmp_path / "out.jsonl"
        exported = await _in_thread(["export", "--context", "legacy", "--output", str(out)], env)
        assert exported.returncode == 0, exported.stderr
        lines = [json.loads(x) for x in out.read_text().splitlines()[1:]]
        assert sum(1 for x in lines if x["kind"] == "AgentMessage") == 4
        assert all(x["record"]["user_id"] == "carol" for x in lines)
        # into an embedded store and back out: the same messages
        data_env = {**subprocess_env(), "HERO_AGENT_DATA_DIR": str(tmp_path / "data")}
        imported = await _in_thread(["import", "--input", str(out)], data_env)
        assert imported.returncode == 0, imported.stderr
        back = tmp_path / "back.jsonl"
        assert (
            await _in_thread(["export", "--context", "legacy", "--output", str(back)], data_env)
        ).returncode == 0
        assert out.read_text() == back.read_text()
        assert dict(osis.dropped) == {}
    async with _strict() as fresh:
        loaded = await _in_thread(["import", "--input", str(out)], _env(fresh))
        assert loaded.returncode == 0, loaded.stderr
        async with OsisEngine(client_settings(fresh.base_url)) as engine:
            convs = await engine.list(Kind.CONVERSATION, Scope("legacy", "carol"), ListQuery(limit=100))
            assert sorted(c["title"] for c in convs.items) == ["Recipes", "Trip planning"]


async def test_a_daemon_on_osis_serve_over_a_unix_socket(tmp_path: Path) -> None:
    sock_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"h11-{os.getpid()}-{free_port()}"
    sock_dir.mkdir()
    sock = sock_dir / "osis.sock"
    serve_cfg = tmp_path / "serve.toml"
    serve_cfg.write_text(f'[store]\npath = "{tmp_path / "osis-data"}"\nsecret = "only-for-tcp"\n')
    log = tmp_path / "osis.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [HERO_AGENT, "--config", str(serve_cfg), "osis", "serve", "--socket", str(sock)],
            env=subprocess_env(),
            stdout=sink,
            stderr=sink,
            text=True,
        )
        try:

            def listening() -> bool:
                if sock.exists():
                    return True
                assert server.poll() is None, log.read_text()
                return False

            await until(listening, timeout=30, interval=0.05, what=f"the socket {sock}")
            assert oct(sock.stat().st_mode & 0o777) == "0o660"
            # a second server on a live socket is refused; the first keeps it
            second = await _in_thread(
                ["--config", str(serve_cfg), "osis", "serve", "--socket", str(sock)], subprocess_env()
            )
            assert second.returncode == 1 and "another server is listening" in second.stderr
            with FakeOpenAI().running_in_thread() as fake:
                port = free_port()
                cfg = _config(tmp_path, fake.base_url)
                cfg.write_text(
                    cfg.read_text().replace("[web]\nenabled = false", f"[web]\nenabled = true\nport = {port}")
                )
                env = {
                    **subprocess_env(),
                    "OSIS_URL": f"unix://{sock}",
                    "HERO_AGENT_WEB__LOCAL_USER": "alice",
                }
                with (tmp_path / "daemon.log").open("wb") as dsink:
                    daemon = await anyio.open_process(
                        [HERO_AGENT, "--config", str(cfg), "serve"], env=env, stdout=dsink, stderr=dsink
                    )
                    try:
                        assert "echo: over the socket" in await _chat(
                            f"http://127.0.0.1:{port}", "over the socket", daemon
                        )
                        daemon.send_signal(signal.SIGTERM)
                        with anyio.fail_after(30):
                            assert await daemon.wait() == 0
                    finally:
                        if daemon.returncode is None:
                            daemon.kill()
                            await daemon.wait()
                        await daemon.aclose()
            settings = StoreSettings(engine="osis", url=f"unix://{sock}")
            async with Store(OsisEngine(settings)) as store:
                assert store.engine.name == "osis"
                convs = (await store.conversations.list(Scope("default", "alice"))).items
                assert [
                    m.content for m in await store.messages.history(Scope("default", "alice"), convs[0].sid)
                ] == [
                    "over the socket",
                    "echo: over the socket",
                ]
            server.send_signal(signal.SIGTERM)
            assert await wait_exit(server) == 0
            assert not sock.exists()
        finally:
            if server.poll() is None:
                server.kill()
            server.wait(timeout=10)
    # a stale socket (its server killed) is replaced by the next server
    with log.open("a") as sink:
        killed = subprocess.Popen(
            [HERO_AGENT, "--config", str(serve_cfg), "osis", "serve", "--socket", str(sock)],
            env=subprocess_env(),
            stdout=sink,
            stderr=sink,
            text=True,
        )
        await until(sock.exists, timeout=30, interval=0.05, what=f"the socket {sock}")
        killed.kill()
        killed.wait(timeout=10)
        assert sock.exists()
        again = subprocess.Popen(
            [HERO_AGENT, "--config", str(serve_cfg), "osis", "serve", "--socket", str(sock)],
            env=subprocess_env(),
            stdout=sink,
            stderr=sink,
            text=True,
        )
        try:
            async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock))) as http:

                async def discovered() -> dict[str, Any] | None:
                    assert again.poll() is None, log.read_text()
                    body = {"jsonrpc": "2.0", "id": 1, "method": "rpc.discover"}
                    try:
                        return dict((await http.post("http://localhost/hero_osis_ai/rpc", json=body)).json())
                    except httpx.TransportError:
                        return None

                answer = await until(discovered, timeout=30, interval=0.05, what="osis serve to answer")
            assert "methods" in answer["result"]
            again.send_signal(signal.SIGTERM)
            assert await wait_exit(again) == 0
        finally:
            if again.poll() is None:
                again.kill()
            again.wait(timeout=10)
    sock_dir.rmdir()


def test_the_unix_socket_is_0660_a_live_one_refused_a_stale_one_replaced() -> None:
    with tempfile.TemporaryDirectory(prefix="h11-") as folder:
        path = str(Path(folder) / "s.sock")
        live = unix_listening_socket(path)
        assert oct(os.stat(path).st_mode & 0o777) == "0o660"
        with pytest.raises(OSError) as refused:
            unix_listening_socket(path)
        assert refused.value.errno == errno.EADDRINUSE
        live.close()  # the file stays behind, nobody listens: stale
        assert os.path.exists(path)
        again = unix_listening_socket(path)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
        again.close()
        plain = Path(folder) / "plain"
        plain.write_text("not a socket")
        with pytest.raises(OSError, match="is not a socket"):
            unix_listening_socket(str(plain))
        assert plain.read_text() == "not a socket"
