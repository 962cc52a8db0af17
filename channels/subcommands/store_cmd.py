"""``hero-agent store rename-user OLD NEW [--merge]``: move every object of a user to another user;
``hero-agent store copy --to CONFIG``: copy the whole store into the store another configuration file
names (any engine to any engine).

The typical use: the web page's user without tokens used to be ``local`` and is now the OS user (the
CLI's default user); ``hero-agent store rename-user local $USER`` makes the old page's conversations
and memories the OS user's. Every context is done (each atomically), and identity links pointing at
``OLD`` point at ``NEW`` afterwards. A target that already has data is refused unless ``--merge``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import anyio

from config.loader import load_settings
from store import copy_store, open_store

if TYPE_CHECKING:
    from config.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("store", help="store maintenance (rename-user, copy)")
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
    copy = sub.add_parser(
        "copy",
        help="copy the whole store into the store of another configuration file",
        description="Copy every record of every context (sids, users and timestamps kept) from the "
        "configured store into the store CONFIG's [store] names, e.g. embedded -> postgres. Records "
        "already there identically are skipped, so a copy cut short can be run again.",
    )
    copy.add_argument("--to", required=True, metavar="CONFIG", help="the configuration file of the target")
    copy.set_defaults(handler=run_copy)


def run_copy(args: argparse.Namespace, settings: Settings) -> int:
    """A progress bar on a terminal (stderr), the count at the end (stdout)."""
    # the file alone: the environment's overrides (HERO_AGENT_DATA_DIR...) describe the source
    target_settings = load_settings(args.to, env={})
    bar = sys.stderr.isatty()

    def progress(done: int, total: int, records: int) -> None:
        if bar:
            filled = int(30 * done / total) if total else 30
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} contexts, {records} records"
            )
            sys.stderr.flush()

    async def copy() -> int:
        async with open_store(settings) as source, open_store(target_settings) as target:
            return await copy_store(source.engine, target.engine, progress=progress)

    copied = anyio.run(copy)
    if bar:
        sys.stderr.write("\n")
    source, target = settings.store.engine, target_settings.store.engine
    print(f"copied {copied} records from the {source} store to the {target} store")
    return 0


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
