"""``hero-agent doctor`` against the fake servers: all green, then each check failing on its own cause
(one thing broken at a time; every other check stays ok)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from channels.main import main
from tests.channels.setup.conftest import BOT_TOKEN, OPENAI_KEY, World, free_port
from tests.fakes.telegram_server import BOT_USERNAME

MCP_SERVER = Path(__file__).resolve().parents[2] / "fakes" / "mcp_stdio_server.py"


def write_config(world: World, *, web_port: int, mcp_command: str = sys.executable, extra: str = "") -> Path:
    config = world.home / "hero-agent.toml"
    config.write_text(
        f"""
[llm]
base_url = "{world.openai.base_url}"
model = "fake-model"

[telegram]
enabled = true
api_base_url = "{world.bot.base_url}"

[web]
port = {web_port}

[[tools.mcp_servers]]
name = "fake"
command = "{mcp_command}"
args = ["{MCP_SERVER}"]
{extra}"""
    )
    return config


def doctor(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, **env: str
) -> tuple[int, str]:
    for name, value in {"OPENAI_API_KEY": OPENAI_KEY, "TELEGRAM_BOT_TOKEN": BOT_TOKEN, **env}.items():
        monkeypatch.setenv(name, value)
    code = main(["doctor"])
    out, err = capsys.readouterr()
    assert err == "", err  # the report is on stdout; nothing is logged at the default level
    return code, out


def statuses(report: str) -> dict[str, str]:
    """check name -> status, from the report's check lines."""
    found: dict[str, str] = {}
    for line in report.splitlines():
        status, _, rest = line.partition("  ")
        if status.strip() in ("ok", "FAIL", "skip"):
            name = rest.strip().split("  ")[0]
            found[name] = status.strip()
    return found


GOOD = {
    "config": "ok",
    "provider": "ok",
    "key": "ok",
    "model": "ok",
    "telegram": "ok",
    "store": "ok",
    "web port": "ok",
    "mcp fake": "ok",
}


def test_all_green(world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    write_config(world, web_port=port)
    code, report = doctor(capsys, monkeypatch)
    assert code == 0, report
    assert statuses(report) == GOOD
    assert f"@{BOT_USERNAME} (Hero)" in report
    assert f"127.0.0.1:{port} is free" in report
    assert f"embedded at {world.home / 'data'} (writable)" in report
    assert "started, " in report and report.rstrip().endswith("all checks passed")
    assert OPENAI_KEY not in report and BOT_TOKEN not in report


def _occupied(world: World, sock: socket.socket) -> dict[str, str]:
    """The web port taken by a listening socket of ours; no environment to change."""
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    write_config(world, web_port=sock.getsockname()[1])
    return {}


Breaker = Callable[[World, socket.socket], dict[str, str]]
CASES: dict[str, tuple[Breaker, dict[str, str], str]] = {
    # name: (what to break, the statuses that change, a word the fix line must carry)
    "provider": (
        lambda w, s: {"HERO_AGENT_LLM__BASE_URL": f"http://127.0.0.1:{free_port()}/v1"},
        {"provider": "FAIL", "key": "skip", "model": "skip"},
        "llm.base_url",
    ),
    "key": (
        lambda w, s: {"OPENAI_API_KEY": "sk-wrong-key-00000000000000"},
        {"key": "FAIL", "model": "skip"},
        "key",
    ),
    "model": (lambda w, s: {"HERO_AGENT_LLM__MODEL": "no-such-model"}, {"model": "FAIL"}, "fake-model"),
    "telegram": (
        lambda w, s: {"TELEGRAM_BOT_TOKEN": "123456:wrong-token"},
        {"telegram": "FAIL"},
        "BotFather",
    ),
    "store": (
        lambda w, s: {"HERO_AGENT_DATA_DIR": str(_a_file(w))},
        {"store": "FAIL"},
        "store.path",
    ),
    "web port": (_occupied, {"web port": "FAIL"}, "[web] port"),
    "mcp": (
        lambda w, s: (write_config(w, web_port=free_port(), mcp_command=str(w.home / "gone")), {})[1],
        {"mcp fake": "FAIL"},
        "tools.mcp_servers",
    ),
}


def _a_file(world: World) -> Path:
    path = world.home / "not-a-dir"
    path.write_text("a file where the data directory should be\n")
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_each_check_fails_on_its_own_cause(
    case: str, world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    breaker, changed, fix_word = CASES[case]
    write_config(world, web_port=free_port())
    with socket.socket() as occupier:
        env = breaker(world, occupier)
        code, report = doctor(capsys, monkeypatch, **env)
    assert code == 1
    assert statuses(report) == {**GOOD, **changed}, report
    lines = report.splitlines()
    failed = [i for i, line in enumerate(lines) if line.startswith("FAIL")]
    assert len(failed) == 1
    fix = lines[failed[0] + 1]
    assert fix.strip().startswith("fix: ") and fix_word in fix
    assert report.rstrip().endswith("1 problem found")
    assert "sk-wrong-key" not in report and "wrong-token" not in report


def test_a_config_that_does_not_load_is_the_one_finding(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(world, web_port=free_port(), extra="\n[web]\nprot = 1\n")
    (world.home / "hero-agent.toml").write_text("[web]\nprot = 1\n")
    code, report = doctor(capsys, monkeypatch)
    assert code == 1
    assert report.splitlines()[0] == "FAIL  config  web.prot: unknown key"
    assert report.splitlines()[1].strip().startswith("fix: edit web.prot")
