"""``hero-agent service install [--user] [--output FILE] [--run-as USER] [--force] [--role serve|osis]``:
a systemd unit for ``hero-agent serve`` (or, ``--role osis``, for ``hero-agent osis serve``) with the
current config file, a restart policy and sandboxing; it prints how to enable it (see
:mod:`channels.setup.systemd`)."""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from channels.setup.systemd import UnitSpec
    from config import Settings

PROG = "hero-agent service install"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("service", help="install a systemd unit for `hero-agent serve`")
    sub = parser.add_subparsers(dest="service_command", metavar="ACTION")
    sub.required = True
    install = sub.add_parser(
        "install",
        help="write the unit file and print how to enable it",
        description="Write a systemd unit running `hero-agent serve` with this configuration file, "
        "restarted on failure and sandboxed. A system unit by default (/etc/systemd/system), a user unit "
        "with --user (~/.config/systemd/user).",
    )
    install.add_argument("--user", action="store_true", help="a user unit (no root needed)")
    install.add_argument("--output", metavar="FILE", help="write the unit here instead")
    install.add_argument("--run-as", metavar="USER", help="system unit: the account (default: yours)")
    install.add_argument("--force", action="store_true", help="replace a different existing unit")
    install.add_argument(
        "--role",
        choices=("serve", "osis"),
        default="serve",
        help="serve: the daemon (hero-agent.service, default); osis: `hero-agent osis serve`, the store "
        "service (hero-agent-osis.service)",
    )
    install.add_argument(
        "--listen",
        default="127.0.0.1:9999",
        metavar="HOST:PORT",
        help="--role osis: the address it serves on (default 127.0.0.1:9999)",
    )
    install.set_defaults(handler=install_unit)


def _command() -> tuple[str, ...]:
    """This installation's entry point: the console script beside the interpreter when there is one."""
    script = Path(sys.executable).parent / "hero-agent"
    if script.is_file():
        return (str(script),)
    return (sys.executable, "-m", "channels.main")


def _run_as(args: argparse.Namespace) -> str:
    if args.run_as:
        return str(args.run_as)
    who = os.environ.get("SUDO_USER") or getpass.getuser()  # not root when run through sudo
    return who


def _target(args: argparse.Namespace, settings: Settings) -> Path:
    from channels.setup.systemd import OSIS_UNIT_NAME, SYSTEM_DIR, UNIT_NAME  # noqa: PLC0415

    name = OSIS_UNIT_NAME if _role(args) == "osis" else UNIT_NAME
    if args.output:
        return Path(args.output).expanduser().absolute()
    if args.user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user" / name
    return SYSTEM_DIR / name


def _role(args: argparse.Namespace) -> str:
    return str(getattr(args, "role", "serve") or "serve")


def _subcommand(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The unit's sub-command for the role; None (after one error line) for a bad ``--listen``."""
    if _role(args) != "osis":
        return ("serve",)
    host, _, port = str(getattr(args, "listen", "127.0.0.1:9999")).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        print(f"{PROG}: error: --listen must be HOST:PORT, e.g. 10.0.0.5:9999", file=sys.stderr)
        return None
    return ("osis", "serve", "--host", host.strip("[]"), "--port", port)


def _prepare_data_dir(spec: UnitSpec) -> None:
    """The sandbox makes everything read-only but ``ReadWritePaths``, which must exist when the
    service starts (systemd fails it with 226/NAMESPACE otherwise): create it now, owned by the
    account the system unit runs as."""
    if spec.data_dir.exists():
        return
    spec.data_dir.mkdir(mode=0o700, parents=True)
    if spec.run_as and os.geteuid() == 0 and spec.run_as != "root":
        shutil.chown(spec.data_dir, user=spec.run_as)


def install_unit(args: argparse.Namespace, settings: Settings) -> int:
    from channels.setup.systemd import UnitSpec, enable_hint, render_unit  # noqa: PLC0415

    if settings.source is None:
        print(f"{PROG}: note: no config file: the unit runs on the defaults (`hero-agent init` writes one)")
    subcommand = _subcommand(args)
    if subcommand is None:
        return 2
    osis = _role(args) == "osis"
    spec = UnitSpec(
        command=_command(),
        config=settings.source.absolute() if settings.source else None,
        data_dir=settings.store.path.absolute(),
        user_unit=args.user,
        run_as="" if args.user else _run_as(args),
        # osis serve lets in-flight calls finish for up to 5 s
        stop_timeout_s=35
        if osis
        else max(settings.web.shutdown_deadline_s, settings.telegram.shutdown_deadline_s) + 30,
        subcommand=subcommand,
        description="hero-agent osis serve: the OSIS store service"
        if osis
        else "hero-agent: self-hosted multi-channel AI agent",
    )
    text = render_unit(spec)
    target = _target(args, settings)
    if target.exists() and target.read_text(encoding="utf-8") != text and not args.force:
        print(f"{PROG}: error: {target} exists and differs; --force replaces it", file=sys.stderr)
        return 1
    try:
        _prepare_data_dir(spec)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        hint = " (a system unit needs root: sudo, or --user)" if not args.user else ""
        print(f"{PROG}: error: cannot write {target}: {exc.strerror}{hint}", file=sys.stderr)
        return 1
    print(f"wrote {target}")
    for line in enable_hint(target, args.user):
        print(line)
    return 0
