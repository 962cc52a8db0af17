"""``hero-agent store rename-user OLD NEW [--merge]``: move every object of a user to another user.

The typical use: the web page's user without tokens used to be ``local`` and is now the OS user (the
CLI's default user); ``hero-agent store rename-user local $USER`` makes the old page's conversations
and memories the OS user's. Every context is done (each atomically), and identity links pointing at
``OLD`` point at ``NEW`` afterwards. A target that already has data is refused unless ``--merge``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import anyio

from store import open_store

if TYPE_CHECKING:
    from config.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("store", help="store maintenance (rename-user)")
    sub = parser.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    rename = sub.add_parser(
        "rename-user",
        help="move every object of a user to another user, in every context",
        description="Move every conversation, message, memory, audit/usage entry and state of user OLD "
        "to user NEW, in every context. Refused when NEW already has data, unless --merge.",
    )
    rename.add_argument("old", metavar="OLD")
    rename.add_argument("new", metavar="NEW")
    rename.add_argument(
        "--merge", action="store_true", help="allow a NEW that has data (on a clash, NEW's record is kept)"
    )
    rename.set_defaults(handler=run_rename_user)


def run_rename_user(args: argparse.Namespace, settings: Settings) -> int:
    """Prints one line per context moved, then a total; store errors reach ``main`` (one line)."""

    async def rename() -> dict[str, dict[str, int]]:
        async with open_store(settings) as store:
            return await store.rename_user(args.old, args.new, merge=args.merge)

    moved = anyio.run(rename)
    for context, counts in moved.items():
        parts = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        print(f"{context}: {parts}")
    total = sum(n for counts in moved.values() for kind, n in counts.items() if kind != "dropped")
    print(f"moved {total} records of user {args.old!r} to {args.new!r} in {len(moved)} context(s)")
    return 0
