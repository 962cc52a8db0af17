"""``hero-agent ask`` through ``main`` in-process (the console script itself, stdin included, runs in
test_e2e.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from channels.main import main
from tests.fakes.openai_server import FakeOpenAI, reply_error, reply_text, reply_tool_calls


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """FakeOpenAI in a thread (``main`` runs its own event loop) and an environment pointing at it."""
    for name in list(os.environ):
        if name.startswith(("HERO_AGENT_", "OPENAI_", "ANTHROPIC_", "OSIS_", "TELEGRAM_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    with FakeOpenAI().running_in_thread() as server:
        for name, value in {
            "HOME": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path / ".config"),
            "HERO_AGENT_DATA_DIR": str(tmp_path / "data"),
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "sk-ask-test-key-00000000000",
            "HERO_AGENT_LLM__MODEL": "fake-model",
            "HERO_AGENT_MEMORY__ENABLED": "false",
            "HERO_AGENT_LLM__MAX_RETRIES": "0",
            "HERO_AGENT_LOGGING__LEVEL": "error",
        }.items():
            monkeypatch.setenv(name, value)
        yield server


def ask(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["ask", "--user", "carol", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_answer_on_stdout_and_history_continues(fake: FakeOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    fake.enqueue(reply_text("first answer", chunks=3))
    assert ask(capsys, "first question") == (0, "first answer\n", "")
    assert ask(capsys, "second question") == (0, "echo: second question\n", "")
    history = [(m["role"], m["content"]) for m in fake.requests[-1]["messages"] if m["role"] != "system"]
    assert history == [
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "second question"),
    ]


def test_commands_run_without_the_model(fake: FakeOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    assert ask(capsys, "remember this")[0] == 0
    code, out, _ = ask(capsys, "/clear")
    assert code == 0 and out.startswith("Cleared")
    code, out, err = ask(capsys, "/bogus")
    assert code == 1 and "Unknown command /bogus" in out and err == "hero-agent: /bogus failed\n"
    assert fake.request_count == 1
    assert ask(capsys, "after the clear")[0] == 0
    assert [m["content"] for m in fake.requests[-1]["messages"] if m["role"] == "user"] == ["after the clear"]


def test_tool_turn_prints_only_the_answer(fake: FakeOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    fake.enqueue(
        reply_tool_calls([("call_1", "current_datetime", "{}")]), reply_text("It is late.", chunks=2)
    )
    assert ask(capsys, "what time is it?") == (0, "It is late.\n", "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--conversation", "zzzz9", "hi"], "hero-agent: error: No conversation with that id."),
        (["--context", "Not Valid", "hi"], "hero-agent: error: invalid context name 'Not Valid'"),
    ],
)
def test_user_errors_are_one_line_exit_1(
    fake: FakeOpenAI, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = ask(capsys, *args)
    assert code == 1 and out == ""
    assert err.startswith(message) and len(err.splitlines()) == 1


def test_provider_failure_exit_1_without_secret(fake: FakeOpenAI, capsys: pytest.CaptureFixture[str]) -> None:
    fake.enqueue(reply_error(401))
    code, _out, err = ask(capsys, "hello")
    assert code == 1
    assert err.splitlines()[-1] == "hero-agent: error: the LLM provider rejected the API key (HTTP 401)"
    assert "sk-ask-test-key" not in err
