"""``hero-agent doctor``: one report of everything that can be wrong, each failure with its fix.

It runs also when the configuration does not load (that is then its one finding), so the command line
hands it the :class:`~config.ConfigError` instead of exiting. See :mod:`channels.setup.doctor`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import anyio

from channels.terminal.logs import SHOWN_EVENTS, quiet_logging
from config.logging import configure_logging
from config.redact import secret_values

if TYPE_CHECKING:
    from config import ConfigError, Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the configuration, provider, Telegram, store, web port and MCP servers",
        description="Check everything the daemon needs and print one line per check, with a fix for "
        "each failure. Exit status 0 when nothing failed, 1 otherwise.",
    )
    parser.set_defaults(handler=run, config_error_handler=run_with_bad_config)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from channels.setup.doctor import FAIL, render, run_checks  # noqa: PLC0415

    logging_settings, hide = quiet_logging(settings.logging, getattr(args, "log_level", None))
    hidden = SHOWN_EVENTS if hide else ()
    configure_logging(logging_settings, secrets=secret_values(settings), hidden_events=hidden)
    checks = anyio.run(run_checks, settings)
    sys.stdout.write(render(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0


def run_with_bad_config(args: argparse.Namespace, error: ConfigError) -> int:
    from channels.setup.doctor import config_failure, render  # noqa: PLC0415

    sys.stdout.write(render(config_failure(error)))
    return 1
