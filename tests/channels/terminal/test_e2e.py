"""End to end: ``hero-agent chat`` in a real terminal (tmux) and ``hero-agent ask`` as a subprocess,
both against FakeOpenAI serving from a thread of the test process."""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAI, reply_error, reply_text
from tests.tmux import Tmux

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SCRIPT = Path(sys.executable).parent / "hero-agent"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI().running_in_thread() as server:
        yield server


def app_env(home: Path, fake: FakeOpenAI) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERO_AGENT_", "OPENAI_", "ANTHROPIC_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        HERO_AGENT_DATA_DIR=str(home / "data"),
        OPENAI_BASE_URL=fake.base_url,
        OPENAI_API_KEY="sk-e2e-test-key-000000000000",
        HERO_AGENT_LLM__MODEL="fake-model",
        HERO_AGENT_MEMORY__ENABLED="false",
        HERO_AGENT_LLM__MAX_RETRIES="0",
    )
    return env


# --- hero-agent ask --------------------------------------------------------------------------------


def ask(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--log-level", "warning", "ask", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def exported_messages(jsonl: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in jsonl.splitlines() if line.strip()]
    return [line["record"] for line in lines if line.get("kind") == "AgentMessage"]


def test_ask_console_script(tmp_path: Path, fake: FakeOpenAI) -> None:
    """The real entry point: answer on stdout, nothing else on stderr, exit codes, stdin."""
    env = app_env(tmp_path, fake)
    first = ask(env, "--user", "bob", "hello there")
    assert (first.returncode, first.stdout, first.stderr) == (0, "echo: hello there\n", "")
    piped = ask(env, "--user", "bob", "-", stdin="from stdin\nsecond line\n")
    assert (piped.returncode, piped.stdout) == (0, "echo: from stdin\nsecond line\n")
    blank = ask(env, "--user", "bob", "-", stdin="   \n")
    empty = (2, "", "hero-agent: error: the message is empty\n")
    assert (blank.returncode, blank.stdout, blank.stderr) == empty
    cleared = ask(env, "--user", "bob", "/clear")
    assert cleared.returncode == 0 and cleared.stdout.startswith("Cleared")
    fake.enqueue(reply_error(401))
    failed = ask(env, "--user", "bob", "this fails")
    assert failed.returncode == 1
    # logs (JSON lines, stderr is not a terminal) may precede it; the last line is the user's message
    assert failed.stderr.strip().splitlines()[-1] == (
        "hero-agent: error: the LLM provider rejected the API key (HTTP 401)"
    )
    assert "Traceback" not in failed.stderr and "sk-e2e-test-key" not in failed.stderr
    assert fake.request_count == 3  # /clear never reached the model

    # every message is stored under the user, tagged with the cli channel
    export = subprocess.run(
        [str(SCRIPT), "export"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert export.returncode == 0
    stored = exported_messages(export.stdout)
    assert {m["channel"] for m in stored} == {"cli"}
    assert {m["user_id"] for m in stored} == {"bob"}
    assert [(m["role"], m["status"]) for m in stored] == [
        *[("user", "complete"), ("assistant", "complete")] * 2,
        ("user", "complete"),
        ("assistant", "error"),  # the failed turn is marked, not lost
    ]


def test_ask_defaults_to_the_os_user(tmp_path: Path, fake: FakeOpenAI) -> None:
    env = app_env(tmp_path, fake)
    assert ask(env, "hi").returncode == 0
    export = subprocess.run(
        [str(SCRIPT), "export"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert {m["user_id"] for m in exported_messages(export.stdout)} == {getpass.getuser()}


# --- hero-agent chat in tmux -----------------------------------------------------------------------


@pytest.fixture
def tmux_chat(tmp_path: Path, fake: FakeOpenAI) -> Iterator[Tmux]:
    env = app_env(tmp_path, fake)
    term = Tmux([str(SCRIPT), "chat", "--user", "alice"], {**env, "TERM": "xterm-256color"}, tmp_path)
    try:
        yield term
    finally:
        term.kill()


def test_chat_in_a_real_terminal(tmux_chat: Tmux, fake: FakeOpenAI, tmp_path: Path) -> None:
    term = tmux_chat
    term.wait_text("/help for commands")
    term.wait_prompt_after("/help for commands")
    term.type("hello tmux")
    term.key("Enter")
    term.wait_prompt_after("echo: hello tmux")
    assert "alice" in term.screen()  # the toolbar shows who and where

    term.type("/clear")
    term.key("Enter")
    term.wait_prompt_after("Cleared")

    # a slow reply, cut by Ctrl-C while it streams
    words = " ".join(f"word{i}" for i in range(300))
    fake.enqueue(reply_text(words, chunks=300, chunk_delay=0.03))
    term.type("tell me a long story")
    term.key("Enter")
    term.wait_text("word10 ")
    term.key("C-c")
    term.wait_prompt_after("interrupted")
    assert "word299" not in term.screen()

    term.type("and after that?")
    term.key("Enter")
    term.wait_prompt_after("echo: and after that?")
    # the model saw the interrupted reply, but no earlier (cleared) turn
    history = [m for m in fake.requests[-1]["messages"] if m["role"] != "system"]
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert history[0]["content"] == "tell me a long story"

    term.key("C-d")
    assert term.wait_exit() == 0
    assert "Traceback" not in term.screen()
    # the input history persisted under the data dir
    assert "+hello tmux" in (tmp_path / "data" / "cli_history").read_text()
    # logs went to the file, not the terminal
    log_lines = (tmp_path / "data" / "logs" / "cli.log").read_text().splitlines()
    assert any(json.loads(line)["event"] == "turn.finished" for line in log_lines)
    assert "turn.finished" not in term.screen()


def test_ask_interrupted_by_ctrl_c_exits_130_and_keeps_history_consistent(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    env = app_env(tmp_path, fake)
    words = " ".join(f"word{i}" for i in range(300))
    fake.enqueue(reply_text(words, chunks=300, chunk_delay=0.03))
    proc = subprocess.Popen(
        [str(SCRIPT), "--log-level", "error", "ask", "--user", "dora", "a long one"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = ""
        while "word5 " not in seen:  # the reply is streaming
            piece = proc.stdout.read(1)
            assert piece, "ask ended before streaming"
            seen += piece
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "hero-agent: interrupted"
    assert "Traceback" not in err
    assert "word299" not in seen + out
    export = subprocess.run(
        [str(SCRIPT), "export"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    stored = exported_messages(export.stdout)
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "interrupted")]
    assert str(stored[1]["content"]).startswith("word0 word1")


def test_chat_with_an_unknown_conversation_is_one_line_exit_1(tmp_path: Path, fake: FakeOpenAI) -> None:
    done = subprocess.run(
        [str(SCRIPT), "chat", "--conversation", "zzzz9"],
        env=app_env(tmp_path, fake),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "hero-agent: error: conversation 'zzzz9' not found"
