"""``hero-agent backup PATH``: a consistent copy of the embedded store, also while the daemon runs.

PATH is a new file, or a directory (the copy is then named ``hero-agent-<date>-<time>.db``). Other
engines are backed up with ``hero-agent export --all`` (or the database server's own tools). Restoring:
docs/operations.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from store import StoreError

if TYPE_CHECKING:
    from config import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "backup",
        help="copy the embedded store consistently, also while the daemon runs",
        description="Write a consistent copy of the embedded store's database (SQLite's online backup "
        "API) to PATH: a new file, or a directory to put a time-stamped file in.",
    )
    parser.add_argument("path", metavar="PATH", help="the backup file (new) or a directory")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from store import backup_embedded, backup_target  # noqa: PLC0415

    if settings.store.engine != "embedded":
        print(
            f"hero-agent backup: error: the {settings.store.engine} store is not a local file: "
            "use `hero-agent export --all --output FILE`",
            file=sys.stderr,
        )
        return 2
    try:
        target = backup_target(Path(args.path).expanduser())
        report = backup_embedded(settings.store.path, target, busy_timeout_s=settings.store.busy_timeout_s)
    except StoreError as exc:
        print(f"hero-agent backup: error: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {settings.store.path} to {report.path} ({report.bytes} bytes, {report.seconds:.2f} s)")
    return 0
