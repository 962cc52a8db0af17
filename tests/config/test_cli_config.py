"""``hero-agent config check`` / ``config show`` through ``main`` and through the console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from channels.main import main

SCRIPT = Path(sys.executable).parent / "hero-agent"
SECRET = "sk-DONOTPRINT-0123456789"


def run_script(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], check=False, capture_output=True, text=True, timeout=60, env=env
    )


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("HERO_AGENT_", "OPENAI_", "ANTHROPIC_"))}
    keep.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / "data"))
    keep.update(extra)
    return keep


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("HERO_AGENT_", "OPENAI_", "ANTHROPIC_", "TELEGRAM_", "OSIS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    return tmp_path


def test_check_ok_with_defaults_and_with_a_file(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check"]) == 0
    assert capsys.readouterr().out.strip() == "ok: defaults"
    cfg = home / "my.toml"
    cfg.write_text("[web]\nport = 9001\n")
    # the global option is accepted before and after the sub-command
    assert main(["--config", str(cfg), "config", "check"]) == 0
    assert capsys.readouterr().out.strip() == f"ok: {cfg}"
    assert main(["config", "check", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out.strip() == f"ok: {cfg}"


def test_check_reports_key_path_and_exits_2(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = home / "bad.toml"
    cfg.write_text(f'[web]\nport = 70000\n[llm]\napi_key = "{SECRET}"\n')
    assert main(["config", "check", "--config", str(cfg)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "hero-agent: config error: web.port: must be 1-65535 (got 70000)"
    assert captured.out == ""
    cfg.write_text("[web]\nprot = 1\n")
    assert main(["config", "check", "--config", str(cfg)]) == 2
    assert capsys.readouterr().err.strip() == "hero-agent: config error: web.prot: unknown key"


def test_env_override_error_names_the_variable(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HERO_AGENT_LLM__PROVIDER", "gemini")
    assert main(["config", "check"]) == 2
    err = capsys.readouterr().err
    assert "llm.provider: must be one of openai, anthropic" in err
    assert "$HERO_AGENT_LLM__PROVIDER" in err


def test_usage_errors_and_help(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "config" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err
    assert main(["config"]) == 2
    assert main(["--log-level", "loud", "config", "check"]) == 2


def test_console_script_exit_codes(home: Path) -> None:
    ok = run_script(["config", "check"], env=clean_env(home))
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok: defaults")
    bad = run_script(
        ["config", "check"],
        env=clean_env(home, HERO_AGENT_WEB__PORT="0", OPENAI_API_KEY=SECRET),
    )
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        == "hero-agent: config error: web.port: must be 1-65535 (got 0) (set by $HERO_AGENT_WEB__PORT)"
    )
    assert "Traceback" not in bad.stderr
    show = run_script(
        ["config", "show"],
        env=clean_env(home, OPENAI_API_KEY=SECRET),
    )
    assert show.returncode == 0
    assert 'api_key = "***"' in show.stdout
    assert SECRET not in show.stdout + show.stderr
    missing = run_script(
        ["--config", str(home / "missing.toml"), "config", "check"],
        env=clean_env(home),
    )
    assert missing.returncode == 2
    assert "config error: --config: file not found" in missing.stderr
