"""Export and import of store contents as JSON Lines, between any two engines.

Format (version 1), one JSON object per line, UTF-8, keys sorted, no spaces::

    {"format":"hero-agent-export","version":1}
    {"kind":"AgentConversation","record":{"context":"default","created_at":...,"sid":"0001",...}}
    {"kind":"AgentMessage","record":{...}}

Records come in the engine's dump order (per context: kinds in ``Kind`` order, then by sid), so an
export of an imported export is byte-identical. Import checks the WHOLE file, against itself and
against what the store holds (:mod:`store.transfer_check`), before writing anything, then restores
records in batches; restoring is idempotent, so importing twice adds nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio
import anyio.to_thread

from store.engine import Engine
from store.models import Kind, Record, Scope, validate_stored_context
from store.transfer_check import (
    FORMAT,
    VERSION,
    ImportPlan,
    check_against_store,
    file_lines,
    parse_line,
    scan_file,
)

BATCH = 1000
_WRITE_CHUNK = 1 << 16
#: the store's default message size limit (``agent.max_message_chars``); the CLI passes the configured one
DEFAULT_MAX_MESSAGE_CHARS = 32_000


def header_line() -> str:
    return _dumps({"format": FORMAT, "version": VERSION})


def record_line(kind: Kind, record: Record) -> str:
    return _dumps({"kind": kind.value, "record": record})


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


async def export_lines(engine: Engine, context: str | None) -> AsyncIterator[str]:
    """The export, line by line (each without its newline): one context, or all when None."""
    contexts = [validate_stored_context(context)] if context is not None else await engine.contexts()
    yield header_line()
    for ctx in contexts:
        async for kind, record in engine.dump(ctx):
            yield record_line(kind, record)


async def export_jsonl(engine: Engine, stream: IO[str], *, context: str | None) -> int:
    """Write the export to a text stream; returns the number of records.

    Writes are gathered in chunks and done in a worker thread, so the event loop never blocks.
    """
    count = -1  # the header is not a record
    chunk: list[str] = []
    size = 0
    async for line in export_lines(engine, context):
        chunk.append(line + "\n")
        size += len(line) + 1
        count += 1
        if size >= _WRITE_CHUNK:
            await anyio.to_thread.run_sync(stream.writelines, chunk)
            chunk, size = [], 0
    await anyio.to_thread.run_sync(stream.writelines, chunk)
    await anyio.to_thread.run_sync(stream.flush)
    return count


@dataclass(slots=True)
class ImportResult:
    """What an import did: records read from the file, and how many were new or changed."""

    read: int = 0
    written: int = 0
    per_kind: dict[str, int] = field(default_factory=dict)
    #: conversations only the store held whose message_count the import's messages changed
    recounted: int = 0


async def import_jsonl(
    engine: Engine, path: Path, *, max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS
) -> ImportResult:
    """Check the whole of ``path`` against itself and the store, then restore its records.

    Nothing is written when anything is wrong: :class:`~store.errors.ImportRejected` lists every
    problem as ``line N: reason`` (see :mod:`store.transfer_check`). Conversations are written with
    their ``message_count`` recomputed from the messages they hold once imported."""
    plan, problems = await anyio.to_thread.run_sync(scan_file, path, max_message_chars)
    await check_against_store(engine, plan, problems)
    result = ImportResult()
    with path.open("rb") as fp:
        lines = file_lines(fp)
        next(lines)  # the header
        while True:
            batch = await anyio.to_thread.run_sync(_read_batch, lines, plan)
            if not batch:
                break
            result.written += await engine.restore_batch(batch)
            result.read += len(batch)
            for kind, _ in batch:
                result.per_kind[kind.value] = result.per_kind.get(kind.value, 0) + 1
    result.recounted = await engine.restore_batch(await _store_counts(engine, plan))
    return result


def _read_batch(lines: Iterator[tuple[int, str]], plan: ImportPlan) -> list[tuple[Kind, Record]]:
    batch: list[tuple[Kind, Record]] = []
    for lineno, raw in lines:
        kind, record = parse_line(lineno, raw)
        if kind is Kind.CONVERSATION:
            record = {**record, "message_count": plan.counts[(record["context"], record["sid"])]}
        batch.append((kind, record))
        if len(batch) >= BATCH:
            break
    return batch


async def _store_counts(engine: Engine, plan: ImportPlan) -> list[tuple[Kind, Record]]:
    """The conversations only the store holds whose message count the import changed, corrected."""
    fixed: list[tuple[Kind, Record]] = []
    for (context, sid), owner in sorted(plan.store_counts_to_fix.items()):
        record = await engine.get(Kind.CONVERSATION, Scope(context, owner), sid)
        if record is not None:
            fixed.append((Kind.CONVERSATION, {**record, "message_count": plan.counts[(context, sid)]}))
    return fixed


async def copy_store(
    source: Engine, target: Engine, *, progress: Callable[[int, int, int], None] | None = None
) -> int:
    """Copy every record of every context of ``source`` into ``target`` (any two engines), in batches
    of :data:`BATCH` (one transaction each where the target can); how many records were copied.

    The records keep their sids, scopes and timestamps, so the target's export is the source's.
    Restoring is idempotent: a copy cut short can be run again. ``progress(done_contexts,
    contexts, records)`` is called after every batch."""
    contexts = await source.contexts()
    copied = 0
    for done, context in enumerate(contexts):
        batch: list[tuple[Kind, Record]] = []
        async for item in source.dump(context):
            batch.append(item)
            if len(batch) >= BATCH:
                await target.restore_batch(batch)
                copied += len(batch)
                batch = []
                if progress is not None:
                    progress(done, len(contexts), copied)
        if batch:
            await target.restore_batch(batch)
            copied += len(batch)
        if progress is not None:
            progress(done + 1, len(contexts), copied)
    return copied
