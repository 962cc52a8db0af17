"""``./dev.sh``: its usage text, and one install serving both the daemon and the tests.

The install itself is exercised by every CI run; here a stand-in venv (scripts named ``python`` and
``hero-agent`` that record how they were called) shows which steps dev.sh takes, without pip.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV_SH = ROOT / "dev.sh"
RECORDER = '#!/bin/sh\necho "$(basename "$0") $*" >> "$(dirname "$0")/../calls"\n'


def run(*args: str, venv: Path | None = None, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HERO_AGENT_TEST_WORKERS"}
    env.update(extra_env)
    if venv is not None:
        env["HERO_AGENT_VENV"] = str(venv)
    return subprocess.run(
        ["bash", str(DEV_SH), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_bare_usage_names_every_command_and_no_script_line() -> None:
    done = run()
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == "usage: ./dev.sh COMMAND [ARGS]"
    assert [line.split()[0] for line in lines[1:]] == ["serve", "chat", "init", "doctor", "test", "setup"]
    assert "set -euo" not in done.stderr and "#" not in done.stderr
    helped = run("help")
    assert helped.returncode == 0 and helped.stdout == done.stderr


def fake_venv(tmp_path: Path, recorder: str = RECORDER) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "hero-agent"):
        script = venv / "bin" / name
        script.write_text(recorder)
        script.chmod(0o755)
    return venv


def test_serve_after_the_dev_install_installs_nothing(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path)
    (venv / ".installed-dev").touch()  # what `./dev.sh test` or `setup` leaves (newer than pyproject)
    done = run("serve", "--log-level", "debug", venv=venv)
    assert done.returncode == 0, done.stderr
    assert (venv / "calls").read_text().splitlines() == ["hero-agent serve --log-level debug"]


def test_a_run_install_does_not_serve_the_tests(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path)
    (venv / ".installed-run").touch()
    assert run("chat", venv=venv).returncode == 0
    assert (venv / "calls").read_text().splitlines() == ["hero-agent chat"]  # run stamp: enough
    (venv / "calls").unlink()
    assert run("setup", venv=venv).returncode == 0
    calls = (venv / "calls").read_text().splitlines()
    assert calls[-1] == "python -m pip install -q -e .[dev]"  # the dev extra is still missing
    assert (venv / ".installed-dev").exists()


def test_the_suite_runs_on_two_workers_unless_told_otherwise(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path)
    (venv / ".installed-dev").touch()
    assert run("test", "tests/store", "-x", venv=venv).returncode == 0
    assert run("test", venv=venv, HERO_AGENT_TEST_WORKERS="0").returncode == 0
    assert (venv / "calls").read_text().splitlines() == [
        "python -m pytest -n 2 --dist loadgroup tests/store -x",
        "python -m pytest -n 0 --dist loadgroup",
    ]


def test_no_test_collected_fails_the_test_command(tmp_path: Path) -> None:
    """pytest's exit 5 (nothing collected, with or without workers) is a failure; others pass through."""
    venv = fake_venv(tmp_path, RECORDER + 'exit "$(cat "$(dirname "$0")/../rc")"\n')
    (venv / ".installed-dev").touch()
    (venv / "rc").write_text("5")
    done = run("test", "-k", "nothing", venv=venv)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "dev.sh: pytest collected no tests: that is a failure"
    for code in ("0", "1", "2"):
        (venv / "rc").write_text(code)
        assert run("test", venv=venv).returncode == int(code)
