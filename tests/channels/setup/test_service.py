"""``hero-agent service install``: the unit files pass ``systemd-analyze verify`` without a single
warning (Debian's systemd; dev.sh installs it), and name the config, restart policy and sandbox."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SCRIPT = Path(sys.executable).parent / "hero-agent"


def hero(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERO_AGENT_", "XDG_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), HERO_AGENT_DATA_DIR=str(home / "data"))
    return subprocess.run(
        [str(SCRIPT), *args], env=env, cwd=home, capture_output=True, text=True, timeout=60, check=False
    )


def verify(unit: Path, *, user: bool, home: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: ./dev.sh installs Debian's systemd package"
    runtime = home / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(home)}
    command = [analyze, *(["--user"] if user else []), "verify", str(unit)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_system_unit_verifies_clean(tmp_path: Path) -> None:
    config = tmp_path / "hero-agent.toml"
    config.write_text("[web]\nport = 8790\n")
    unit = tmp_path / "out" / "hero-agent.service"
    done = hero(tmp_path, "service", "install", "--output", str(unit), "--run-as", "daemon")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"wrote {unit}"
    assert "systemctl enable --now hero-agent" in done.stdout
    text = unit.read_text()
    assert f"ExecStart={SCRIPT} --config {config} serve" in text
    assert "Restart=on-failure" in text and "User=daemon" in text
    assert f"ReadWritePaths={tmp_path / 'data'}" in text and (tmp_path / "data").is_dir()
    for option in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes"):
        assert option in text
    checked = verify(unit, user=False, home=tmp_path)
    assert (checked.returncode, checked.stderr, checked.stdout) == (0, "", "")


def test_a_user_unit_verifies_clean_and_is_not_replaced_silently(tmp_path: Path) -> None:
    (tmp_path / "hero-agent.toml").write_text("")
    done = hero(tmp_path, "service", "install", "--user")
    assert done.returncode == 0, done.stderr
    unit = tmp_path / ".config" / "systemd" / "user" / "hero-agent.service"
    assert done.stdout.splitlines()[0] == f"wrote {unit}"
    assert "systemctl --user daemon-reload" in done.stdout and "loginctl enable-linger" in done.stdout
    text = unit.read_text()
    assert "WantedBy=default.target" in text and "User=" not in text
    checked = verify(unit, user=True, home=tmp_path)
    assert (checked.returncode, checked.stderr, checked.stdout) == (0, "", "")
    # the same unit again is fine; a different one needs --force
    assert hero(tmp_path, "service", "install", "--user").returncode == 0
    unit.write_text(text.replace("RestartSec=5s", "RestartSec=1s"))
    refused = hero(tmp_path, "service", "install", "--user")
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert hero(tmp_path, "service", "install", "--user", "--force").returncode == 0
    assert unit.read_text() == text


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check is real: a misspelt option is reported."""
    unit = tmp_path / "broken.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nNoNewPrivilegs=yes\n")
    checked = verify(unit, user=False, home=tmp_path)
    assert "Unknown key" in checked.stderr


def test_the_osis_role_runs_osis_serve_and_verifies_clean(tmp_path: Path) -> None:
    config = tmp_path / "hero-agent.toml"
    config.write_text('[store]\nengine = "postgres"\nurl = "postgresql://hero@db.example/hero"\n')
    done = hero(tmp_path, "service", "install", "--user", "--role", "osis", "--listen", "10.0.0.5:9999")
    assert done.returncode == 0, done.stderr
    unit = tmp_path / ".config" / "systemd" / "user" / "hero-agent-osis.service"
    assert done.stdout.splitlines()[0] == f"wrote {unit}"
    assert "enable --now hero-agent-osis" in done.stdout
    text = unit.read_text()
    assert f"ExecStart={SCRIPT} --config {config} osis serve --host 10.0.0.5 --port 9999" in text
    assert "Description=hero-agent osis serve: the OSIS store service" in text
    checked = verify(unit, user=True, home=tmp_path)
    assert (checked.returncode, checked.stderr, checked.stdout) == (0, "", "")
    bad = hero(tmp_path, "service", "install", "--user", "--role", "osis", "--listen", "nowhere")
    assert bad.returncode == 2 and bad.stderr.strip().endswith(
        "--listen must be HOST:PORT, e.g. 10.0.0.5:9999"
    )
