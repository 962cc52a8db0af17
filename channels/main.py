"""The ``hero-agent`` command line: the composition root.

``main`` parses the arguments, loads the settings (the only place that calls :func:`load_settings`),
configures logging and runs the sub-command's handler. Every sub-command lives in one module of
:mod:`channels.subcommands` exposing ``register(subparsers)``; each parser sets ``handler=fn`` with
``fn(args, settings) -> int``; a command that must also run when the configuration does not load
(``init``, ``doctor``) sets ``config_error_handler=fn(args, config_error) -> int`` as well.

Errors are one line on stderr: a configuration error exits 2, a user-safe error of any layer
(``HeroError.user_safe``, see channels/errors.py) exits 1, Ctrl-C exits 130. An unexpected exception
prints one line and a hint; with ``--log-level debug`` the traceback follows.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
from collections.abc import Callable, Sequence

from channels.subcommands import (
    ask,
    backup,
    chat,
    config_cmd,
    doctor,
    init,
    osis,
    pair,
    serve,
    service,
    store_cmd,
    transfer,
)
from channels.version import version
from config import ConfigError, HeroError, Settings
from config.loader import load_settings
from config.logging import configure_logging, redact_text
from config.redact import secret_values

PROG = "hero-agent"
COMMAND_MODULES = (config_cmd, chat, ask, transfer, osis, serve, pair, store_cmd)
#: first run and operations (issue 19): set-up, diagnosis, systemd unit, backup
SETUP_MODULES = (init, doctor, service, backup)
LEVELS = ("debug", "info", "warning", "error", "critical")
Handler = Callable[[argparse.Namespace, Settings], int]
BadConfigHandler = Callable[[argparse.Namespace, ConfigError], int]


def _add_globals(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a value given after the sub-command must not be reset by the sub-parser's default
    parser.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS, help="configuration file (TOML)"
    )
    parser.add_argument(
        "--log-level", choices=LEVELS, default=argparse.SUPPRESS, help="override logging.level for this run"
    )


def _subparser_actions(
    parser: argparse.ArgumentParser,
) -> list[argparse._SubParsersAction[argparse.ArgumentParser]]:
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def _add_globals_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept the global options after any (nested) sub-command: ``hero-agent config check --config F``."""
    for action in _subparser_actions(parser):
        for sub in set(action.choices.values()):
            known = {opt for a in sub._actions for opt in a.option_strings}
            if "--config" not in known:
                _add_globals(sub)
            _add_globals_everywhere(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Self-hosted, multi-channel AI agent.")
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    _add_globals(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (*COMMAND_MODULES, *SETUP_MODULES):
        module.register(subparsers)
    _add_globals_everywhere(parser)
    return parser


def _leaf(exc: BaseException) -> BaseException:
    """The one real error inside nested single-exception groups (anyio task groups wrap errors)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _user_message(exc: BaseException) -> tuple[str, int] | None:
    """(line, exit code) for an error the user can act on, or None for an unexpected one."""
    if isinstance(exc, ConfigError):
        return f"config error: {exc}", 2
    if isinstance(exc, HeroError) and exc.user_safe:
        return f"error: {exc}", 1
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hero-agent`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    debug = getattr(args, "log_level", None) == "debug"
    try:
        try:
            settings = load_settings(getattr(args, "config", None))
        except ConfigError as exc:
            # commands that repair or diagnose a configuration (init, doctor) run without one
            on_bad_config: BadConfigHandler | None = getattr(args, "config_error_handler", None)
            if on_bad_config is None:
                raise
            return on_bad_config(args, exc)
        if getattr(args, "log_level", None):
            settings = dataclasses.replace(
                settings, logging=dataclasses.replace(settings.logging, level=args.log_level)
            )
        debug = settings.logging.level == "debug"
        configure_logging(settings.logging, secrets=secret_values(settings))
        return handler(args, settings)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BaseException as raised:
        return _report(raised, debug)


def _report(raised: BaseException, debug: bool) -> int:
    """One line on stderr for an error escaping a handler; the exit code."""
    error = _leaf(raised)
    if isinstance(error, KeyboardInterrupt):
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    if not isinstance(error, Exception):  # SystemExit and friends keep their meaning
        raise raised
    known = _user_message(error)
    if known is not None:
        print(f"{PROG}: {redact_text(known[0])}", file=sys.stderr)
        return known[1]
    print(f"{PROG}: unexpected error: {type(error).__name__}: {redact_text(str(error))}", file=sys.stderr)
    if debug:
        print(redact_text("".join(traceback.format_exception(raised))), file=sys.stderr, end="")
    else:
        print(f"{PROG}: run again with --log-level debug to see the traceback", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
