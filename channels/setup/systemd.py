"""The systemd unit of ``hero-agent service install``: ``serve`` restarted on failure, sandboxed.

A system unit (``/etc/systemd/system``) runs the daemon as an unprivileged user with the full set of
hardening options: a read-only view of the system and of home directories, writes only to the data
directory, no new privileges, no capabilities, only Unix and IP sockets. A user unit
(``~/.config/systemd/user``, ``--user``) gets the options that need no privileges (the others would
need user namespaces). ``TimeoutStopSec`` leaves the daemon its shutdown deadline: on SIGTERM it lets
running turns finish before it exits.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "hero-agent.service"
#: the unit of ``--role osis``: ``hero-agent osis serve`` (the store service in front of PostgreSQL)
OSIS_UNIT_NAME = "hero-agent-osis.service"
SYSTEM_DIR = Path("/etc/systemd/system")

#: options every unit gets (none needs privileges)
BASE_HARDENING = (
    "NoNewPrivileges=yes",
    "LockPersonality=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "SystemCallArchitectures=native",
    "UMask=0077",
)
#: options of a system unit on top
SYSTEM_HARDENING = (
    "ProtectSystem=strict",
    "ProtectHome=read-only",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictNamespaces=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
)


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """What the unit runs: the command, its config file, the data dir it writes, whose it is."""

    command: tuple[str, ...]
    config: Path | None
    data_dir: Path
    user_unit: bool
    run_as: str = ""
    stop_timeout_s: float = 60.0
    #: the sub-command the unit runs: ``serve`` (the daemon) or ``osis serve --host H --port P``
    subcommand: tuple[str, ...] = ("serve",)
    description: str = "hero-agent: self-hosted multi-channel AI agent"


def render_unit(spec: UnitSpec) -> str:
    args = [*spec.command]
    if spec.config is not None:
        args += ["--config", str(spec.config)]
    args += spec.subcommand
    service = [
        "Type=exec",
        f"ExecStart={shlex.join(args)}",
        "Restart=on-failure",
        "RestartSec=5s",
        f"TimeoutStopSec={int(spec.stop_timeout_s)}s",
        "Environment=PYTHONUNBUFFERED=1",
        f"ReadWritePaths={spec.data_dir}",
    ]
    if spec.config is not None:
        # secrets may live beside the config instead of in it: KEY=value lines, optional
        service.append(f"EnvironmentFile=-{spec.config.parent / 'hero-agent.env'}")
    if not spec.user_unit:
        service.append(f"User={spec.run_as}")
    hardening = BASE_HARDENING + (() if spec.user_unit else SYSTEM_HARDENING)
    target = "default.target" if spec.user_unit else "multi-user.target"
    lines = [
        "# Written by `hero-agent service install`; run it again after moving the config or the venv.",
        "[Unit]",
        f"Description={spec.description}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        *service,
        "# sandboxing",
        *hardening,
        "",
        "[Install]",
        f"WantedBy={target}",
    ]
    return "\n".join(lines) + "\n"


def enable_hint(path: Path, user_unit: bool) -> list[str]:
    """What to run next (printed, not run: enabling a service is the administrator's decision)."""
    ctl = "systemctl --user" if user_unit else "sudo systemctl"
    name = path.stem
    lines = [
        f"enable and start it:  {ctl} daemon-reload && {ctl} enable --now {name}",
        f"follow its logs:      journalctl {'--user ' if user_unit else ''}-u {name} -f",
    ]
    if user_unit:
        lines.append("keep it running while you are logged out:  loginctl enable-linger $USER")
    return lines
