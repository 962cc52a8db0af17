"""``hero-agent ask`` at the default log level, as a script sees it: stdout is the answer and nothing
else, a failure is exactly one line on stderr, logs are readable lines at warning and above, and a
retried provider shows only as a self-erasing progress line on a terminal (tmux)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.channels.terminal.test_e2e import SCRIPT, app_env
from tests.fakes.openai_server import FakeOpenAI, reply_error, reply_text
from tests.tmux import Tmux

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI().running_in_thread() as server:
        yield server


def quiet_env(home: Path, fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    """The e2e environment with retries on and nothing about logging: the defaults are under test."""
    env = app_env(home, fake)
    env.update(
        HERO_AGENT_LLM__MAX_RETRIES="2",
        HERO_AGENT_LLM__RETRY_BASE_DELAY_S="0.01",
        HERO_AGENT_LLM__RETRY_MAX_DELAY_S="0.02",
        **extra,
    )
    return env


def ask(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [str(SCRIPT), "ask", "--user", "erin", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def test_success_is_the_answer_alone(tmp_path: Path, fake: FakeOpenAI) -> None:
    env = quiet_env(tmp_path, fake)
    assert ask(env, "hello") == (0, "echo: hello\n", "")
    # a retried call that then succeeds: still only the answer (no log line, no progress line)
    fake.enqueue(reply_error(503), reply_text("second try", chunks=2))
    assert ask(env, "again") == (0, "second try\n", "")


def test_a_failure_is_exactly_one_line_on_stderr(tmp_path: Path, fake: FakeOpenAI) -> None:
    env = quiet_env(tmp_path, fake)
    fake.enqueue(reply_error(503), reply_error(503), reply_error(503))  # every retry fails
    code, out, err = ask(env, "this fails")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("hero-agent: error: ") and "503" in err
    fake.enqueue(reply_error(401))
    code, out, err = ask(env, "bad key")
    assert (code, out, err) == (
        1,
        "",
        "hero-agent: error: the LLM provider rejected the API key (HTTP 401)\n",
    )


def test_logs_are_readable_lines_at_warning_and_above(tmp_path: Path, fake: FakeOpenAI) -> None:
    servers = json.dumps([{"name": "gone", "command": str(tmp_path / "no-such-server")}])
    env = quiet_env(tmp_path, fake, HERO_AGENT_TOOLS__MCP_SERVERS=servers)
    code, out, err = ask(env, "hello")
    assert (code, out) == (0, "echo: hello\n")
    lines = err.splitlines()
    assert len(lines) == 1 and "mcp.server_unavailable" in lines[0] and not lines[0].startswith("{")
    # --log-level still works: info events (JSON off a terminal unless configured) come back
    done = subprocess.run(
        [str(SCRIPT), "--log-level", "info", "ask", "--user", "erin", "more"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout == "echo: more\n"
    assert "turn.finished" in done.stderr


def test_on_a_terminal_a_retry_is_a_progress_line_that_goes_away(tmp_path: Path, fake: FakeOpenAI) -> None:
    env = quiet_env(tmp_path, fake, TERM="xterm-256color")
    # the retried request answers slowly, so the progress line stays up long enough to be read
    fake.enqueue(reply_error(503), reply_text("back again", chunks=2, delay=3.0))
    term = Tmux([str(SCRIPT), "ask", "--user", "erin", "are you there?"], env, tmp_path)
    try:
        shown = term.wait_text("retrying (1/2)")
        assert "503" in shown or "unavailable" in shown.lower()
        assert term.wait_exit() == 0
        screen = term.screen()
        assert "back again" in screen
        assert "retrying" not in screen and "waiting for" not in screen  # erased, not left behind
        assert "provider.retry" not in screen  # no log line for it either
    finally:
        term.kill()
