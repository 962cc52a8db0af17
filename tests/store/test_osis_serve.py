"""``hero-agent osis serve`` as a real process: start-up, sharing between processes, clean signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from store.api import Store
from store.models import Message, Scope
from store.osis_client import OsisEngine
from tests.store.osis_fixtures import client_settings, free_port

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]
HERO_AGENT = str(Path(sys.executable).with_name("hero-agent"))
CHILD = Path(__file__).with_name("osis_turn_child.py")
SCOPE = Scope("default", "alice")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERO_AGENT_", "OSIS_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _config(tmp_path: Path, secret: str = "") -> Path:
    cfg = tmp_path / "hero-agent.toml"
    lines = ["[store]", f'path = "{tmp_path / "data"}"']
    if secret:
        lines.append(f'secret = "{secret}"')
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


@contextmanager
def _serve(tmp_path: Path, port: int, *extra: str, secret: str = "") -> Iterator[subprocess.Popen[str]]:
    cfg = _config(tmp_path, secret)
    cmd = [HERO_AGENT, "--config", str(cfg), "osis", "serve", "--port", str(port), *extra]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


async def _wait_ready(proc: subprocess.Popen[str], port: int, secret: str = "") -> dict[str, object]:
    url = f"http://127.0.0.1:{port}/hero_osis_ai/rpc"
    body = {"jsonrpc": "2.0", "id": 1, "method": "rpc.discover"}
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    async with httpx.AsyncClient(timeout=2, headers=headers) as http:
        with anyio.fail_after(30):
            while True:
                assert proc.poll() is None, "osis serve exited during start-up"
                try:
                    answer = (await http.post(url, json=body)).json()
                    return dict(answer["result"])
                except httpx.TransportError:
                    await anyio.sleep(0.05)


async def _wait_exit(proc: subprocess.Popen[str]) -> int:
    with anyio.fail_after(30):
        return await anyio.to_thread.run_sync(proc.wait)


async def test_serve_answers_discover_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hero_osis"
    with _serve(tmp_path, port) as proc:
        doc = await _wait_ready(proc, port)
        assert any(m["name"] == "agentmessage.set" for m in doc["methods"])  # type: ignore[attr-defined]
        async with Store(OsisEngine(client_settings(url))) as store:
            conv = await store.create_conversation(SCOPE, "kept", channel="cli")
        proc.send_signal(signal.SIGTERM)
        assert await _wait_exit(proc) == 0
    with _serve(tmp_path, port) as proc:
        await _wait_ready(proc, port)
        async with Store(OsisEngine(client_settings(url))) as store:
            assert (await store.get_conversation(SCOPE, conv.sid)).title == "kept"
        proc.send_signal(signal.SIGINT)
        assert await _wait_exit(proc) == 0


async def test_serve_refuses_a_public_bind_without_secret(tmp_path: Path) -> None:
    with _serve(tmp_path, free_port(), "--host", "0.0.0.0") as proc:
        assert await _wait_exit(proc) == 2
        _, err = proc.communicate(timeout=10)
    assert "store.secret" in err and "Traceback" not in err


async def test_public_bind_with_a_secret_requires_it(tmp_path: Path) -> None:
    port = free_port()
    secret = "a-long-shared-secret"
    with _serve(tmp_path, port, "--host", "0.0.0.0", secret=secret) as proc:
        await _wait_ready(proc, port, secret)
        async with httpx.AsyncClient(timeout=5) as http:
            anonymous = await http.post(
                f"http://127.0.0.1:{port}/hero_osis_ai/rpc",
                json={"jsonrpc": "2.0", "id": 1, "method": "store.ping"},
            )
        assert anonymous.status_code == 401
        url = f"http://127.0.0.1:{port}/hero_osis"
        async with Store(OsisEngine(client_settings(url, secret=secret))) as store:
            assert (await store.create_conversation(SCOPE, "authorized")).title == "authorized"
        proc.send_signal(signal.SIGTERM)
        assert await _wait_exit(proc) == 0
        out, err = proc.communicate(timeout=10)
    assert secret not in out + err


async def test_two_processes_share_one_server(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hero_osis"
    turns = 30
    with _serve(tmp_path, port) as server:
        await _wait_ready(server, port)
        async with Store(OsisEngine(client_settings(url))) as store:
            conv = await store.create_conversation(SCOPE, "shared", channel="cli")
            children = [
                subprocess.Popen(
                    [sys.executable, str(CHILD), url, conv.sid, name, str(turns)],
                    cwd=ROOT,
                    env=_env(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for name in ("p1", "p2")
            ]
            try:
                with anyio.fail_after(30):
                    for child in children:
                        assert child.stdout is not None
                        assert (await anyio.to_thread.run_sync(child.stdout.readline)).strip() == "ready"
                for child in children:  # both start their turns at once
                    assert child.stdin is not None
                    child.stdin.write("go\n")
                    child.stdin.flush()
                for child in children:
                    assert await _wait_exit(child) == 0, child.communicate()[1]
            finally:
                for child in children:
                    if child.poll() is None:
                        child.kill()
                    child.communicate(timeout=10)
            messages: list[Message] = list((await store.list_messages(SCOPE, conv.sid, limit=1000)).items)
            conv_after = await store.get_conversation(SCOPE, conv.sid)
        server.send_signal(signal.SIGTERM)
        assert await _wait_exit(server) == 0
    assert [m.seq for m in messages] == list(range(1, 4 * turns + 1))
    assert conv_after.message_count == 4 * turns
    expected = {f"{p}-{i}-{s}" for p in ("p1", "p2") for i in range(turns) for s in "qa"}
    assert {m.content for m in messages} == expected
    # turns never interleave: every question is directly followed by its own answer
    for q, a in zip(messages[::2], messages[1::2], strict=True):
        assert q.role == "user" and a.content == q.content[:-1] + "a"
