"""``hero-agent osis serve`` and ``hero-agent migrate-sqlite PATH`` (SPEC 3, 7.3, 7.4).

Both handlers take ``(args, settings)`` and return the exit code. Heavy imports (uvicorn, the embedded
engine) happen inside the handlers so that ``hero-agent --help`` stays fast.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

import anyio

from store import Scope, StoreError

if TYPE_CHECKING:
    from config import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9999


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``osis serve`` and ``migrate-sqlite`` to the root parser's sub-commands."""
    osis = subparsers.add_parser("osis", help="the OSIS JSON-RPC store service")
    osis_sub = osis.add_subparsers(dest="osis_command", metavar="COMMAND")
    osis_sub.required = True
    serve = osis_sub.add_parser(
        "serve",
        help="serve the configured embedded store over OSIS JSON-RPC (default 127.0.0.1:9999)",
    )
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    serve.set_defaults(handler=osis_serve)

    migrate = subparsers.add_parser(
        "migrate-sqlite", help="import a legacy SQLite agent database into the configured store"
    )
    migrate.add_argument("path", metavar="PATH", help="the legacy SQLite database file")
    migrate.add_argument(
        "--context", default=None, help="target context (default: store.context, else agent.default_context)"
    )
    migrate.add_argument("--user", default=None, help="target user (default: the OS user name)")
    migrate.set_defaults(handler=migrate_sqlite)


def osis_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the OSIS server in front of the embedded engine until SIGINT/SIGTERM; 0 on a clean stop."""
    from store import ServeRefused, serve_embedded  # noqa: PLC0415 (uvicorn: load on use)

    try:
        anyio.run(serve_embedded, settings, args.host, int(args.port))
    except ServeRefused as exc:
        print(f"hero-agent osis serve: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"hero-agent osis serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{args.host}:{args.port}"
        print(f"hero-agent osis serve: cannot listen on {where}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def migrate_sqlite(args: argparse.Namespace, settings: Settings) -> int:
    """Import a legacy database; prints one line of counts per table."""
    from store import migrate_file  # noqa: PLC0415 (load on use)

    context = args.context or settings.store.context or settings.agent.default_context
    user = args.user or _os_user()
    try:
        scope = Scope(context, user)
        report = anyio.run(migrate_file, settings, scope, args.path)
    except StoreError as exc:
        print(f"hero-agent migrate-sqlite: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 0


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"
