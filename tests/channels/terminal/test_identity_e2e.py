"""One person per machine: ``ask`` as the OS user, then the page (no token) shows that conversation;
``store rename-user`` moves the old page's ``local`` data; ``/status`` and ``/model`` in the CLI.
Real subprocesses (``hero-agent ask``, ``hero-agent serve``) against FakeOpenAI in a thread."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.channels.terminal.test_e2e import SCRIPT, app_env, ask, fake  # noqa: F401 (the fixture)
from tests.fakes.openai_server import FakeOpenAI
from tests.waiting import until_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def person_env(home: Path, fake: FakeOpenAI, user: str = "ann") -> dict[str, str]:  # noqa: F811
    """The environment of the OS user ``user`` (what ``getpass.getuser`` reads first)."""
    env = app_env(home, fake)
    env.update(LOGNAME=user, USER=user, HERO_AGENT_TELEGRAM__ENABLED="false")
    return env


def hero(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--log-level", "warning", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[httpx.Client]:
    """``hero-agent serve`` (web only) until the block ends; a client of its page's API."""
    port = free_port()
    env = {**env, "HERO_AGENT_WEB__PORT": str(port), "HERO_AGENT_LOGGING__FORMAT": "json"}
    with log.open("wb") as out:
        proc = subprocess.Popen([str(SCRIPT), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=out)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:

        def healthy() -> bool:
            try:
                if client.get("/healthz").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            return False

        until_sync(healthy, timeout=30, interval=0.05, what="the daemon to come up")
        yield client
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_cli_and_the_page_are_one_person(tmp_path: Path, fake: FakeOpenAI) -> None:  # noqa: F811
    env = person_env(tmp_path, fake)
    answered = ask(env, "hello from the terminal")
    assert (answered.returncode, answered.stdout) == (0, "echo: hello from the terminal\n")
    with serving(env, tmp_path / "serve.log") as page:
        listed = page.get("/api/conversations").json()
        assert [c["title"] for c in listed["items"]] == ["hello from the terminal"]
        assert page.get("/api/stats").json()["user"] == "ann"
        conv = listed["items"][0]["id"]
        messages = page.get(f"/api/conversations/{conv}/messages").json()["items"]
        assert [m["content"] for m in messages] == [
            "hello from the terminal",
            "echo: hello from the terminal",
        ]
    assert "web.local_user_data" not in (tmp_path / "serve.log").read_text()


def test_status_and_model_in_the_cli(tmp_path: Path, fake: FakeOpenAI) -> None:  # noqa: F811
    env = {**person_env(tmp_path, fake), "HERO_AGENT_LLM__FALLBACK_MODELS": "fake-big"}
    before = ask(env, "/status")
    assert before.returncode == 0
    assert before.stdout.splitlines() == [
        "Model: fake-model",
        f"Provider: openai at {fake.base_url.split('//')[1].split('/')[0]}",
        "Context: default (you are ann)",
        "Conversation: none yet",
        "Store: embedded",
    ]
    assert ask(env, "/model").stdout.splitlines() == [
        "Models (switch with /model NAME):",
        "fake-model (in use)",
        "fake-big",
    ]
    assert ask(env, "/model fake-big").stdout.strip() == "This conversation now uses fake-big."
    assert ask(env, "which one?").stdout == "echo: which one?\n"
    assert fake.requests[-1]["model"] == "fake-big"
    assert "Model: fake-big" in ask(env, "/status").stdout
    wrong = ask(env, "/model nope")
    assert wrong.returncode == 1
    assert wrong.stdout == "Unknown model 'nope'. Configured: fake-model, fake-big.\n"


def test_rename_user_moves_the_old_local_data(tmp_path: Path, fake: FakeOpenAI) -> None:  # noqa: F811
    env = person_env(tmp_path, fake)
    assert ask(env, "--user", "local", "written on the old page").returncode == 0
    with serving(env, tmp_path / "before.log") as page:
        assert page.get("/api/conversations").json()["items"] == []  # the old data is not shown...
    events = [json.loads(line) for line in (tmp_path / "before.log").read_text().splitlines()]
    [warning] = [e for e in events if e["event"] == "web.local_user_data"]  # ...and the start
    assert warning["fix"] == "hero-agent store rename-user local ann"  # says how to move it

    assert ask(env, "mine already").returncode == 0
    refused = hero(env, "store", "rename-user", "local", "ann")
    assert refused.returncode == 1
    assert (
        refused.stderr
        == "hero-agent: error: user 'ann' already has data (in default): add --merge to merge\n"
    )
    moved = hero(env, "store", "rename-user", "local", "ann", "--merge")
    assert moved.returncode == 0, moved.stderr
    # the conversation, its two messages and the usage entry; local's active-conversation marker
    # clashed with ann's and was dropped (ann's wins)
    assert moved.stdout.splitlines() == [
        "default: 1 AgentConversation, 2 AgentMessage, 1 AgentUsageEntry, 1 dropped",
        "moved 4 records of user 'local' to 'ann' in 1 context(s)",
    ]
    with serving(env, tmp_path / "after.log") as page:
        titles = sorted(c["title"] for c in page.get("/api/conversations").json()["items"])
        assert titles == ["mine already", "written on the old page"]
    assert "web.local_user_data" not in (tmp_path / "after.log").read_text()
    again = hero(env, "store", "rename-user", "local", "ann")
    assert again.stdout.splitlines()[-1] == "moved 0 records of user 'local' to 'ann' in 0 context(s)"
