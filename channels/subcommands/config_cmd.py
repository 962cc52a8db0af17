"""``hero-agent config check`` and ``hero-agent config show [--json]``.

Loading and validation happen in :func:`channels.main.main` before a handler runs, so an invalid
configuration never reaches these handlers: it exits 2 with ``hero-agent: config error: <key>: <reason>``.
"""

from __future__ import annotations

import argparse
import json
import sys

from config import Settings
from config.redact import settings_to_toml_dict, to_toml


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("config", help="validate or show the configuration")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION")
    sub.required = True
    check = sub.add_parser(
        "check", help="load and validate the configuration; exit 0 when valid, 2 otherwise"
    )
    check.set_defaults(handler=check_config)
    show = sub.add_parser("show", help="print the effective configuration, secrets redacted")
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    show.set_defaults(handler=show_config)


def check_config(args: argparse.Namespace, settings: Settings) -> int:
    print(f"ok: {settings.source or 'defaults'}")
    return 0


def show_config(args: argparse.Namespace, settings: Settings) -> int:
    data = settings_to_toml_dict(settings, redact=True)
    if args.json:
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(f"# source: {settings.source or 'defaults'}\n")
        sys.stdout.write(to_toml(data))
    return 0
