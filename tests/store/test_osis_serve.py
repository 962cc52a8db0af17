"""``hero-agent osis serve`` as a real process: start-up, sharing between processes, clean signals."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from store.api.store import Store
from store.models import Message, Scope
from store.osis.client import OsisEngine
from tests.store.osis_fixtures import ROOT, client_settings, free_port, subprocess_env, wait_exit, wait_ready
from tests.store.osis_fixtures import serve_process as _serve

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
CHILD = Path(__file__).with_name("osis_turn_child.py")
SCOPE = Scope("default", "alice")


async def test_serve_answers_discover_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hero_osis"
    with _serve(tmp_path, port) as proc:
        doc = await wait_ready(proc, port)
        assert any(m["name"] == "agentmessage.set" for m in doc["methods"])  # type: ignore[attr-defined]
        async with Store(OsisEngine(client_settings(url))) as store:
            conv = await store.conversations.create(SCOPE, "kept", channel="cli")
        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc) == 0
    with _serve(tmp_path, port) as proc:
        await wait_ready(proc, port)
        async with Store(OsisEngine(client_settings(url))) as store:
            assert (await store.conversations.get(SCOPE, conv.sid)).title == "kept"
        proc.send_signal(signal.SIGINT)
        assert await wait_exit(proc) == 0


async def test_serve_refuses_a_public_bind_without_secret(tmp_path: Path) -> None:
    with _serve(tmp_path, free_port(), "--host", "0.0.0.0") as proc:
        assert await wait_exit(proc) == 2
    err = (tmp_path / "osis-serve.log").read_text()
    assert "store.secret" in err and "Traceback" not in err


async def test_public_bind_with_a_secret_requires_it(tmp_path: Path) -> None:
    port = free_port()
    secret = "a-long-shared-secret"
    with _serve(tmp_path, port, "--host", "0.0.0.0", secret=secret) as proc:
        await wait_ready(proc, port, secret)
        async with httpx.AsyncClient(timeout=5) as http:
            anonymous = await http.post(
                f"http://127.0.0.1:{port}/hero_osis_ai/rpc",
                json={"jsonrpc": "2.0", "id": 1, "method": "store.ping"},
            )
        assert anonymous.status_code == 401
        url = f"http://127.0.0.1:{port}/hero_osis"
        async with Store(OsisEngine(client_settings(url, secret=secret))) as store:
            assert (await store.conversations.create(SCOPE, "authorized")).title == "authorized"
        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc) == 0
    output = (tmp_path / "osis-serve.log").read_text()
    assert "osis.serving" in output and secret not in output


async def test_two_processes_share_one_server(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hero_osis"
    turns = 30
    with _serve(tmp_path, port) as server:
        await wait_ready(server, port)
        async with Store(OsisEngine(client_settings(url))) as store:
            conv = await store.conversations.create(SCOPE, "shared", channel="cli")
            children = [
                subprocess.Popen(
                    [sys.executable, str(CHILD), url, conv.sid, name, str(turns)],
                    cwd=ROOT,
                    env=subprocess_env(),
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
                    assert await wait_exit(child) == 0, child.communicate()[1]
            finally:
                for child in children:
                    if child.poll() is None:
                        child.kill()
                    child.communicate(timeout=10)
            messages: list[Message] = list((await store.messages.list(SCOPE, conv.sid, limit=1000)).items)
            conv_after = await store.conversations.get(SCOPE, conv.sid)
        server.send_signal(signal.SIGTERM)
        assert await wait_exit(server) == 0
    assert [m.seq for m in messages] == list(range(1, 4 * turns + 1))
    assert conv_after.message_count == 4 * turns
    expected = {f"{p}-{i}-{s}" for p in ("p1", "p2") for i in range(turns) for s in "qa"}
    assert {m.content for m in messages} == expected
    # turns never interleave: every question is directly followed by its own answer
    for q, a in zip(messages[::2], messages[1::2], strict=True):
        assert q.role == "user" and a.content == q.content[:-1] + "a"
