"""``hero-agent init`` from flags (in-process) and in a real terminal (tmux), against the fake servers:
new file, edits that keep comments and other keys with a ``.bak``, a refused key, Telegram, web token."""

from __future__ import annotations

import io
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from channels.main import main
from config.loader import load_settings
from tests.channels.setup.conftest import BOT_TOKEN, OPENAI_KEY, World
from tests.fakes.telegram_server import BOT_USERNAME
from tests.tmux import Tmux

SCRIPT = Path(sys.executable).parent / "hero-agent"


def user_config(world: World) -> Path:
    return world.home / ".config" / "hero-agent" / "config.toml"


def init(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = ""
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["init", "--non-interactive", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_flags_write_a_new_private_file_where_discovery_finds_it(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_KEY", OPENAI_KEY)
    flags = ("--provider", "compatible", "--base-url", world.openai.base_url, "--api-key-env", "MY_KEY")
    code, out, err = init(capsys, monkeypatch, *flags)
    assert (code, err) == (0, ""), err
    path = user_config(world)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_name("config.toml.bak").exists()
    settings = load_settings(None, {"HOME": str(world.home), "XDG_CONFIG_HOME": str(world.home / ".config")})
    assert settings.source == path
    llm = settings.llm
    assert (llm.provider, llm.base_url, llm.api_key, llm.model) == (
        "openai",
        world.openai.base_url,
        OPENAI_KEY,
        "fake-model",  # the server's first model
    )
    assert "test call: fake-model answered" in out and OPENAI_KEY not in out
    assert world.openai.request_count == 1  # the test call


def test_a_refused_key_writes_nothing_and_says_why_in_one_line(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = ("--provider", "compatible", "--base-url", world.openai.base_url, "--api-key-stdin")
    code, out, err = init(capsys, monkeypatch, *flags, stdin="sk-wrong-key-000000000000\n")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "rejected the API key (HTTP 401)" in err and "sk-wrong" not in err
    assert not user_config(world).exists()


def test_a_secret_is_never_a_command_line_value(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _out, err = init(capsys, monkeypatch, "--api-key", OPENAI_KEY)
    assert code == 2 and "unrecognized arguments" in err
    assert not user_config(world).exists()


EXISTING = """\
# my notes: keep this comment
[agent]
system_prompt = "You are terse."   # inline comment too

[llm]
base_url = "{url}"
api_key = "{key}"
model = "fake-model"

[tools]
http_fetch = false
"""


def test_an_edit_keeps_comments_and_other_keys_and_a_backup(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    world.openai.models = ["fake-model", "other-model"]
    path = world.home / "hero-agent.toml"  # discovered in the working directory: edited there
    original = EXISTING.format(url=world.openai.base_url, key=OPENAI_KEY)
    path.write_text(original)
    code, out, err = init(capsys, monkeypatch, "--model", "other-model")
    assert (code, err) == (0, ""), err
    text = path.read_text()
    assert "# my notes: keep this comment" in text and "# inline comment too" in text
    data = tomllib.loads(text)
    assert data["agent"]["system_prompt"] == "You are terse." and data["tools"]["http_fetch"] is False
    assert data["llm"]["model"] == "other-model" and data["llm"]["api_key"] == OPENAI_KEY
    assert path.with_name("hero-agent.toml.bak").read_text() == original
    assert f"the previous version is {path}.bak" in out
    assert not user_config(world).exists()
    # the same again changes nothing and writes nothing
    code, out, _ = init(capsys, monkeypatch, "--model", "other-model")
    assert code == 0 and out.splitlines()[-1] == f"no changes: {path} left as it was"


def test_telegram_token_checked_with_get_me_and_a_web_token(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERO_AGENT_TELEGRAM__API_BASE_URL", world.bot.base_url)
    flags = ("--provider", "compatible", "--base-url", world.openai.base_url, "--api-key-stdin")
    more = ("--telegram-token-stdin", "--web-token-user", "alice")
    code, out, err = init(capsys, monkeypatch, *flags, *more, stdin=f"{OPENAI_KEY}\n{BOT_TOKEN}\n")
    assert (code, err) == (0, ""), err
    assert f"telegram: @{BOT_USERNAME}" in out and "hero-agent pair approve CODE" in out
    data = tomllib.loads(user_config(world).read_text())
    assert data["telegram"] == {"enabled": True, "token": BOT_TOKEN}
    ((token, user),) = data["web"]["tokens"].items()
    assert user == "alice" and len(token) >= 24
    assert out.count(token) == 1 and BOT_TOKEN not in out and OPENAI_KEY not in out
    # a wrong bot token: one line, nothing written
    user_config(world).unlink()
    code, out, err = init(
        capsys, monkeypatch, *flags, "--telegram-token-stdin", stdin=f"{OPENAI_KEY}\n1:bad\n"
    )
    assert code == 1 and "rejected the token" in err and not user_config(world).exists()


# --- in a real terminal -------------------------------------------------------------------------------


def terminal(world: World, *args: str) -> Tmux:
    env = {
        **world.env,
        "PATH": "/usr/bin:/bin",
        "TERM": "xterm-256color",
        "HERO_AGENT_TELEGRAM__API_BASE_URL": world.bot.base_url,
    }
    return Tmux([str(SCRIPT), "init", *args], env, world.home)


def answer(term: Tmux, question: str, text: str = "") -> None:
    term.wait_text(question)
    if text:
        term.type(text)
    term.key("Enter")


def test_interactive_new_config_with_a_wrong_key_then_the_right_one(world: World) -> None:
    term = terminal(world)
    try:
        answer(term, "Provider:", "\b3")  # the default is 1: erase it, choose the compatible server
        term.wait_text("Server URL (ends in /v1):")
        term.key("C-u")
        answer(term, "Server URL (ends in /v1):", world.openai.base_url)
        answer(term, "API key", "sk-wrong-key-000000000000")
        term.wait_text("rejected the API key (HTTP 401)")
        term.wait(lambda s: s.count("API key") >= 2, "the key asked again")
        term.type(OPENAI_KEY)
        term.key("Enter")
        term.wait_text("key accepted")
        answer(term, "Model (Tab completes):")  # the server's first model is the default
        term.wait_text("ok: fake-model answered")
        answer(term, "Set up a Telegram bot? [y/N]", "y")
        answer(term, "Bot token from @BotFather:", BOT_TOKEN)
        term.wait_text(f"ok: the bot is @{BOT_USERNAME}")
        answer(term, "Protect the web page with a token", "n")
        screen = term.wait_text("next: `hero-agent doctor`")
        assert term.wait_exit() == 0
        assert OPENAI_KEY not in screen and BOT_TOKEN not in screen and "sk-wrong" not in screen
    finally:
        term.kill()
    path = user_config(world)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = tomllib.loads(path.read_text())
    assert data["llm"] == {
        "provider": "openai",
        "base_url": world.openai.base_url,
        "api_key": OPENAI_KEY,
        "model": "fake-model",
    }
    assert data["telegram"] == {"enabled": True, "token": BOT_TOKEN}


def test_interactive_rerun_edits_the_file_after_confirming(world: World) -> None:
    world.openai.models = ["fake-model", "other-model"]
    path = user_config(world)
    path.parent.mkdir(parents=True)
    original = EXISTING.format(url=world.openai.base_url, key=OPENAI_KEY)
    path.write_text(original)
    term = terminal(world)
    try:
        term.wait_text(f"editing {path}")
        answer(term, "Provider:")  # the current one (3: the compatible server) is the default
        answer(term, "Server URL (ends in /v1):")  # the current URL is the default
        answer(term, "API key (Enter keeps the current key):")
        term.wait_text("key accepted")
        term.wait_text("Model (Tab completes):")
        term.key("C-u")
        answer(term, "Model (Tab completes):", "other-model")
        term.wait_text("ok: other-model answered")
        answer(term, "Set up a Telegram bot? [y/N]")
        answer(term, "Protect the web page with a token", "n")
        term.wait_text("changes: llm.provider, llm.model")
        answer(term, "Write them to", "y")
        term.wait_text("the previous version is")
        assert term.wait_exit() == 0
    finally:
        term.kill()
    text = path.read_text()
    assert "# my notes: keep this comment" in text and 'system_prompt = "You are terse."' in text
    assert tomllib.loads(text)["llm"]["model"] == "other-model"
    assert path.with_name("config.toml.bak").read_text() == original
