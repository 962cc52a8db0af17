"""Export and import of store contents as JSON Lines, between any two engines.

Format (version 1), one JSON object per line, UTF-8, keys sorted, no spaces::

    {"format":"hero-agent-export","version":1}
    {"kind":"AgentConversation","record":{"context":"default","created_at":...,"sid":"0001",...}}
    {"kind":"AgentMessage","record":{...}}

Records come in the engine's dump order (per context: kinds in ``Kind`` order, then by sid), so an
export of an imported export is byte-identical. Import validates the WHOLE file before writing
anything, then restores records in batches; restoring is idempotent, so importing twice adds nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio
import anyio.to_thread

from store.engine import Engine
from store.errors import ImportFormatError, InvalidInput
from store.models import Kind, Record, Scope, validate_context, validate_sid, validate_user

FORMAT = "hero-agent-export"
VERSION = 1
BATCH = 1000
_WRITE_CHUNK = 1 << 16

#: fields a record of each kind must carry, with their JSON types (besides the base fields)
_REQUIRED: dict[Kind, dict[str, type | tuple[type, ...]]] = {
    Kind.CONVERSATION: {"title": str, "is_archived": bool},
    Kind.MESSAGE: {"conversation_id": str, "seq": int, "role": str, "content": str},
    Kind.MEMORY: {"content": str, "hash": str},
    Kind.AUDIT: {"tool": str},
    Kind.USAGE: {"model": str},
    Kind.STATE: {"key": str, "value": str},
    Kind.ATTACHMENT: {"conversation_id": str, "mime": str, "size": int, "data": str},
}


def header_line() -> str:
    return _dumps({"format": FORMAT, "version": VERSION})


def record_line(kind: Kind, record: Record) -> str:
    return _dumps({"kind": kind.value, "record": record})


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


async def export_lines(engine: Engine, context: str | None) -> AsyncIterator[str]:
    """The export, line by line (each without its newline): one context, or all when None."""
    contexts = [validate_context(context)] if context is not None else await engine.contexts()
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


def parse_line(lineno: int, text: str) -> tuple[Kind, Record]:
    """One record line, checked; raises ImportFormatError naming the 1-based line."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(lineno, f"not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict) or set(obj) != {"kind", "record"}:
        raise ImportFormatError(lineno, 'expected an object with exactly "kind" and "record"')
    if obj["kind"] not in Kind._value2member_map_:
        raise ImportFormatError(lineno, f"unknown kind {obj['kind']!r}")
    kind, record = Kind(obj["kind"]), obj["record"]
    if not isinstance(record, dict):
        raise ImportFormatError(lineno, "record must be a JSON object")
    try:
        validate_sid(record.get("sid"))  # type: ignore[arg-type]
        validate_context(record.get("context"))  # type: ignore[arg-type]
        validate_user(record.get("user_id"))  # type: ignore[arg-type]
    except InvalidInput as exc:
        raise ImportFormatError(lineno, str(exc)) from None
    checks: dict[str, type | tuple[type, ...]] = {"created_at": int, "updated_at": int, **_REQUIRED[kind]}
    for name, typ in checks.items():
        value = record.get(name)
        if name not in record:
            raise ImportFormatError(lineno, f"{kind.value} record lacks the field {name!r}")
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ImportFormatError(lineno, f"field {name!r} has the wrong type")
    for name in ("conversation_id",):  # indexed by the embedded engine when present: text or null
        if record.get(name) is not None and not isinstance(record[name], str):
            raise ImportFormatError(lineno, f"field {name!r} has the wrong type")
    if kind is Kind.MESSAGE and record["seq"] < 1:
        raise ImportFormatError(lineno, "seq must be a positive integer")
    return kind, record


def _check_header(text: str) -> None:
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ImportFormatError(1, f"not a hero-agent export (the first line must be the {FORMAT} header)")
    if obj.get("version") != VERSION:
        raise ImportFormatError(
            1, f"unsupported export version {obj.get('version')!r} (this one reads {VERSION})"
        )


@dataclass(slots=True)
class _Plan:
    """What the validation pass learned: record count, and conversations the file relies on."""

    records: int = 0
    #: (context, user, conversation sid) that messages refer to before (or without) the file defining
    #: them -> the first such line; each must already be in the store
    external: dict[tuple[str, str, str], int] = field(default_factory=dict)


def _validate(path: Path) -> _Plan:
    plan = _Plan()
    seen: dict[tuple[str, str, str], str] = {}  # (kind, context, sid) -> user
    seqs: dict[tuple[str, str, int], str] = {}  # (context, conversation, seq) -> message sid
    lineno = 0
    with path.open("rb") as fp:
        for lineno, raw in _lines(fp):
            if lineno == 1:
                _check_header(raw)
                continue
            kind, rec = parse_line(lineno, raw)
            key = (kind.value, rec["context"], rec["sid"])
            if key in seen:
                raise ImportFormatError(
                    lineno, f"{kind.value} {rec['sid']} appears twice in {rec['context']!r}"
                )
            seen[key] = rec["user_id"]
            if kind is Kind.MESSAGE:
                _check_message(plan, seen, seqs, lineno, rec)
            elif kind is Kind.ATTACHMENT:
                _check_owner(plan, seen, lineno, rec, "attachment")
            plan.records += 1
    if lineno == 0:
        raise ImportFormatError(1, "the file is empty")
    return plan


def _check_message(
    plan: _Plan,
    seen: dict[tuple[str, str, str], str],
    seqs: dict[tuple[str, str, int], str],
    lineno: int,
    rec: Record,
) -> None:
    _check_owner(plan, seen, lineno, rec, "message")
    if seqs.setdefault((rec["context"], rec["conversation_id"], rec["seq"]), rec["sid"]) != rec["sid"]:
        raise ImportFormatError(lineno, f"seq {rec['seq']} appears twice in one conversation")


def _check_owner(
    plan: _Plan, seen: dict[tuple[str, str, str], str], lineno: int, rec: Record, what: str
) -> None:
    """A message's or attachment's conversation: the same user's, earlier in the file or in the store."""
    conv = (Kind.CONVERSATION.value, rec["context"], rec["conversation_id"])
    if seen.get(conv, rec["user_id"]) != rec["user_id"]:
        raise ImportFormatError(lineno, f"{what} belongs to another user's conversation")
    if conv not in seen:
        plan.external.setdefault((rec["context"], rec["user_id"], rec["conversation_id"]), lineno)


def _lines(fp: IO[bytes]) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of every line; decoded one by one so a bad byte names its line."""
    for lineno, raw in enumerate(fp, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ImportFormatError(lineno, "not UTF-8 text") from None
        yield lineno, text.rstrip("\n").rstrip("\r")


async def import_jsonl(engine: Engine, path: Path) -> ImportResult:
    """Validate every line of ``path``, then restore its records. Nothing is written when a line is bad."""
    plan = await anyio.to_thread.run_sync(_validate, path)
    for (ctx, user, conv), lineno in plan.external.items():
        if await engine.get(Kind.CONVERSATION, Scope(ctx, user), conv) is None:
            raise ImportFormatError(
                lineno,
                f"record refers to conversation {conv!r}, neither earlier in the file nor in the store",
            )
    result = ImportResult()
    with path.open("rb") as fp:
        lines = _lines(fp)
        next(lines)  # the header
        while True:
            batch = await anyio.to_thread.run_sync(_read_batch, lines)
            if not batch:
                break
            result.written += await engine.restore_batch(batch)
            result.read += len(batch)
            for kind, _ in batch:
                result.per_kind[kind.value] = result.per_kind.get(kind.value, 0) + 1
    return result


def _read_batch(lines: Iterator[tuple[int, str]]) -> list[tuple[Kind, Record]]:
    batch: list[tuple[Kind, Record]] = []
    for lineno, raw in lines:
        batch.append(parse_line(lineno, raw))
        if len(batch) >= BATCH:
            break
    return batch
