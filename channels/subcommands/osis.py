"""``hero-agent osis serve`` and ``hero-agent migrate-sqlite PATH`` (SPEC 3, 7.3, 7.4).

Both handlers take ``(args, settings)`` and return the exit code. Heavy imports (uvicorn, the embedded
engine) happen inside the handlers so that ``hero-agent --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import signal
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
import structlog

from channels.errors import ChannelCrashed, ChannelError
from store import Scope, StoreError

if TYPE_CHECKING:
    from channels.serving import ServedApp
    from config import Settings, StoreSettings

log = structlog.get_logger()
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9999


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``osis serve`` and ``migrate-sqlite`` to the root parser's sub-commands."""
    osis = subparsers.add_parser("osis", help="the OSIS JSON-RPC store service")
    osis_sub = osis.add_subparsers(dest="osis_command", metavar="COMMAND")
    osis_sub.required = True
    serve = osis_sub.add_parser(
        "serve",
        help="serve the configured store (embedded, or postgres) over OSIS JSON-RPC (default 127.0.0.1:9999)",
    )
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    serve.add_argument(
        "--socket",
        default="",
        metavar="PATH",
        help="serve on this unix socket instead (mode 0660, removed on exit; no secret needed)",
    )
    serve.set_defaults(handler=osis_serve)

    migrate = subparsers.add_parser(
        "migrate-sqlite", help="import a legacy SQLite agent database into the configured store"
    )
    migrate.add_argument("path", metavar="PATH", help="the legacy SQLite database file")
    migrate.add_argument(
        "--context", default=None, help="target context (default: store.context, else agent.default_context)"
    )
    migrate.add_argument(
        "--user",
        default=None,
        help="the user of rows without a user column (default: the OS user name)",
    )
    migrate.add_argument(
        "--all-to-user",
        action="store_true",
        help="every row to --user, ignoring the legacy user columns",
    )
    migrate.set_defaults(handler=migrate_sqlite)


def osis_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the OSIS server in front of the configured store until SIGINT/SIGTERM; 0 on a clean stop,
    2 when refused (a public bind without ``store.secret``), 1 on a failure or a server that dies."""
    from channels.serving import is_loopback  # noqa: PLC0415 (uvicorn: load on use)

    host, port, path = args.host, int(args.port), str(args.socket or "")
    if not path and not settings.store.secret and not is_loopback(host):
        print(
            f"hero-agent osis serve: refusing to serve on non-loopback {host} without store.secret",
            file=sys.stderr,
        )
        return 2
    try:
        anyio.run(_serve, settings, host, port, path)
    except (StoreError, ChannelError) as exc:
        print(f"hero-agent osis serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"unix socket {path}" if path else f"{host}:{port}"
        print(f"hero-agent osis serve: cannot listen on {where}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def served_store(settings: Settings) -> StoreSettings:
    """The store ``osis serve`` stands in front of: PostgreSQL when ``store.engine = "postgres"`` (the
    server then keeps nothing locally, so several of them can serve one database), else the embedded
    store at ``store.path`` (``engine = "osis"`` there names this very service, not a store to serve).
    ``store.secret`` is the service's bearer secret here, so it is not also sent to PostgreSQL as the
    password: that one comes from the URL, ``PGPASSWORD`` or ``~/.pgpass``."""
    if settings.store.engine == "postgres":
        return dataclasses.replace(settings.store, secret="")
    return dataclasses.replace(settings.store, engine="embedded")


async def _serve(settings: Settings, host: str, port: int, path: str = "") -> None:
    """The store of :func:`served_store` over OSIS JSON-RPC until
    SIGINT/SIGTERM; raises ChannelCrashed when the server dies under it. On a unix socket (``path``)
    no secret is asked: the socket's 0660 mode is the access control."""
    import uvicorn  # noqa: PLC0415 (load on use)

    from channels.serving import ServedApp  # noqa: PLC0415
    from store import OSIS_RPC_PATH, build_engine, build_osis_app  # noqa: PLC0415

    secret = "" if path else settings.store.secret
    served = ServedApp("osis serve: the server", host, port, unix_path=path)
    async with build_engine(served_store(settings)) as engine:
        config = uvicorn.Config(
            build_osis_app(engine, secret=secret),
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await served.start(config)
            try:
                where = f"unix://{path}" if path else f"http://{host}:{served.port}"
                log.info("osis.serving", url=f"{where}{OSIS_RPC_PATH}", auth=bool(secret))
                await _until_signal_or_crash(served, signals)
            finally:
                with anyio.CancelScope(shield=True):
                    await served.stop()


async def _until_signal_or_crash(served: ServedApp, signals: AsyncIterator[int]) -> None:
    crashed: ChannelCrashed | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal crashed
            try:
                await served.serving()
            except ChannelCrashed as exc:
                crashed = exc
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        async for signum in signals:
            log.info("osis.stopping", signal=signal.Signals(signum).name)
            break
        tg.cancel_scope.cancel()
    if crashed is not None:
        raise crashed


def migrate_sqlite(args: argparse.Namespace, settings: Settings) -> int:
    """Import a legacy database; prints one line of counts per table."""
    from store import migrate_file  # noqa: PLC0415 (load on use)

    context = args.context or settings.store.context or settings.agent.default_context
    user = args.user or settings.os_user
    try:
        scope = Scope(context, user)
        keep_users = not getattr(args, "all_to_user", False)
        report = anyio.run(functools.partial(migrate_file, keep_users=keep_users), settings, scope, args.path)
    except StoreError as exc:
        print(f"hero-agent migrate-sqlite: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 0
