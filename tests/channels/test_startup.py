"""A start-up that talks: ``hero-agent serve`` prints a banner on a terminal (tmux), warns without
stopping when the provider is unreachable, and puts the same facts in ``daemon.ready`` off a terminal."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.gcpause import THRESHOLDS
from tests.fakes.openai_server import FakeOpenAI
from tests.tmux import Tmux
from tests.waiting import until_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SCRIPT = Path(sys.executable).parent / "hero-agent"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI().running_in_thread() as server:
        yield server


def serve_env(home: Path, base_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERO_AGENT_", "OPENAI_", "ANTHROPIC_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        HERO_AGENT_DATA_DIR=str(home / "data"),
        OPENAI_BASE_URL=base_url,
        OPENAI_API_KEY="sk-startup-test-key-0000000",
        HERO_AGENT_LLM__MODEL="fake-model",
        HERO_AGENT_MEMORY__ENABLED="false",
        HERO_AGENT_WEB__PORT=str(port),
        TERM="xterm-256color",
    )
    return env


def wait_healthy(port: int, timeout: float = 30.0) -> None:
    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    until_sync(healthy, timeout=timeout, interval=0.05, what="the daemon to become healthy")


def test_banner_on_a_terminal(tmp_path: Path, fake: FakeOpenAI) -> None:
    port = free_port()
    term = Tmux([str(SCRIPT), "serve"], serve_env(tmp_path, fake.base_url, port), tmp_path)
    try:
        screen = term.wait_text("Ctrl-C stops.")
        assert "is ready" in screen
        assert f"  page      http://127.0.0.1:{port}/" in screen
        assert f"  model     fake-model (openai at {fake.base_url})" in screen
        assert "  channels  web" in screen
        assert f"  store     embedded at {tmp_path / 'data'}" in screen
        assert "warning" not in screen
        term.key("C-c")
        assert term.wait_exit() == 0
    finally:
        term.kill()


def test_an_unreachable_provider_warns_and_the_daemon_serves(tmp_path: Path) -> None:
    port, dead = free_port(), free_port()
    env = serve_env(tmp_path, f"http://127.0.0.1:{dead}/v1", port)
    term = Tmux([str(SCRIPT), "serve"], env, tmp_path)
    try:
        screen = term.wait_text("Ctrl-C stops.")
        assert "  warning   the provider is unreachable: " in screen
        assert "hero-agent doctor" in screen
        wait_healthy(port)  # still serving: the page and history work without the provider
        term.key("C-c")
        assert term.wait_exit() == 0
    finally:
        term.kill()


def test_off_a_terminal_the_facts_are_fields_of_daemon_ready(tmp_path: Path, fake: FakeOpenAI) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [str(SCRIPT), "serve"],
        env=serve_env(tmp_path, fake.base_url, port),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(port)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == 0 and out == ""  # no banner off a terminal
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    ready = next(e for e in events if e["event"] == "daemon.ready")
    assert ready["url"] == f"http://127.0.0.1:{port}/"
    assert (ready["provider"], ready["model"], ready["base_url"]) == ("openai", "fake-model", fake.base_url)
    assert (ready["store"], ready["data"]) == ("embedded", str(tmp_path / "data"))
    assert ready["channels"] == ["web"] and ready["provider_status"] == "ok"


def test_the_daemon_freezes_what_start_up_built_for_the_collector(tmp_path: Path, fake: FakeOpenAI) -> None:
    """Once its channels are up the daemon moves its start-up objects out of the garbage collector's
    reach and raises the collector's thresholds (agent/gcpause.py): logged as ``daemon.gc_frozen``
    and shown in /metrics with the pauses."""
    port = free_port()
    proc = subprocess.Popen(
        [str(SCRIPT), "serve"],
        env=serve_env(tmp_path, fake.base_url, port),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(port)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait(10)
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert names.index("daemon.gc_frozen") < names.index("daemon.ready")
    frozen = next(e for e in events if e["event"] == "daemon.gc_frozen")["objects"]
    assert frozen > 10_000  # the modules, classes and settings of a running daemon
    lines = metrics.splitlines()
    shown = next(line for line in lines if line.startswith("hero_gc_frozen_objects "))
    assert int(shown.split()[1]) > 10_000  # (frozen objects freed since by refcounting leave the count)
    # and the collector runs at the daemon's thresholds, not CPython's 700 / 10 / 10
    assert next(e for e in events if e["event"] == "daemon.gc_frozen")["thresholds"] == list(THRESHOLDS)
    for generation, threshold in enumerate(THRESHOLDS):
        assert f'hero_gc_threshold{{generation="{generation}"}} {threshold}' in lines
    # its own full collections in quiet moments are counted (none is due this early)
    assert "hero_gc_quiet_collections_total 0" in lines
    assert 'hero_gc_collections_total{generation="2"}' in metrics
    assert any(line.startswith('hero_gc_pause_seconds_total{generation="0"}') for line in lines)
    assert "hero_provider_socket_writes_total" in metrics
    # the daemon shortened the interpreter's switch interval (agent/switching.py; default 0.005)
    assert "hero_gil_switch_interval_seconds 0.000500" in lines
