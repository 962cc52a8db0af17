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


def run(*args: str, venv: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
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


def fake_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "hero-agent"):
        script = venv / "bin" / name
        script.write_text(RECORDER)
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
