"""``hero-agent export`` and ``hero-agent import``: JSON Lines dump and load of the configured store."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING

import anyio

from store import ImportResult, StoreError, export_jsonl, import_jsonl, open_store, validate_context

if TYPE_CHECKING:
    from config.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    exp = subparsers.add_parser(
        "export",
        help="write a context (or every context) as JSON Lines",
        description="Dump store records as JSON Lines (first line: a format header).",
    )
    which = exp.add_mutually_exclusive_group()
    which.add_argument("--context", help="the context to export (default: agent.default_context)")
    which.add_argument("--all", action="store_true", help="export every context")
    exp.add_argument("--output", default="-", help="file to write, '-' for stdout (default)")
    exp.set_defaults(handler=run_export)

    imp = subparsers.add_parser(
        "import",
        help="load a JSON Lines export (idempotent; nothing is written if any line is bad)",
        description="Load an export made by 'hero-agent export', from any engine.",
    )
    imp.add_argument("--input", default="-", help="file to read, '-' for stdin (default)")
    imp.set_defaults(handler=run_import)


def _fail(command: str, exc: BaseException) -> int:
    print(f"hero-agent {command}: {exc}", file=sys.stderr)
    return 1


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    """Export to ``--output``; a file is written beside its target and renamed when complete."""
    try:
        context = None if args.all else validate_context(args.context or settings.agent.default_context)
        if args.output == "-":
            count = anyio.run(_export, settings, context, sys.stdout)
        else:
            count = _export_to_file(settings, context, Path(args.output))
    except (StoreError, OSError) as exc:
        return _fail("export", exc)
    where = "every context" if context is None else f"context {context!r}"
    print(f"exported {count} records of {where}", file=sys.stderr)
    return 0


def _export_to_file(settings: Settings, context: str | None, target: Path) -> int:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent if str(target.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fp:
            count = anyio.run(_export, settings, context, fp)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, target)
        return count
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def _export(settings: Settings, context: str | None, stream: IO[str]) -> int:
    async with open_store(settings) as store:
        return await export_jsonl(store.engine, stream, context=context)


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    """Import from ``--input``; stdin is spooled to a temporary file first (import reads twice)."""
    try:
        if args.input == "-":
            with tempfile.NamedTemporaryFile("wb", suffix=".jsonl") as spool:
                shutil.copyfileobj(sys.stdin.buffer, spool)
                spool.flush()
                result = anyio.run(_import, settings, Path(spool.name))
        else:
            result = anyio.run(_import, settings, Path(args.input))
    except (StoreError, OSError) as exc:
        return _fail("import", exc)
    recounted = f"; message count updated in {result.recounted} conversation(s)" if result.recounted else ""
    print(
        f"imported {result.written} new or changed records ({result.read} read, "
        f"{result.read - result.written} already present){recounted}",
        file=sys.stderr,
    )
    return 0


async def _import(settings: Settings, path: Path) -> ImportResult:
    async with open_store(settings) as store:
        return await import_jsonl(store.engine, path, max_message_chars=store.max_message_chars)
