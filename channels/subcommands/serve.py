"""``hero-agent serve``: the daemon running every enabled channel until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the daemon: every enabled channel (web, telegram) until SIGINT/SIGTERM",
        description="Run every enabled channel in one process until SIGINT or SIGTERM.",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the daemon; 0 after a clean shutdown, 1 when a channel or the store cannot start."""
    # imported here: `hero-agent --help` and the other commands need not load the web stack
    import anyio  # noqa: PLC0415

    from channels.daemon import serve  # noqa: PLC0415

    return anyio.run(serve, settings)
