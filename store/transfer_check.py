"""Import validation: a whole export file checked against itself and against the store, before anything
is written (issue 10, point 4).

Two passes. :func:`scan_file` reads the file (blocking: run it in a worker thread) and checks every
line on its own and against the earlier lines: the format, the scope, sizes within the configured
limits, each sid once, each seq once per conversation, each message's conversation known. Then
:func:`check_against_store` streams the store's records of the contexts the file touches once (sids,
owners and message seqs only are kept) and checks what the file would do to them: a record whose sid
another user holds, a conversation that exists nowhere, a seq another message already holds, a gap
in a conversation's seqs, an existing message moved or renumbered. It also computes every touched
conversation's ``message_count`` as it will be after the import, so the import writes counts that
are right rather than the ones the file claims.

Every problem is collected with its 1-based line (``line N: reason``); any problem refuses the whole
import with :class:`~store.errors.ImportRejected`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from store.api.base import MAX_TAGS, MAX_TAIL_DIGEST_CHARS, MAX_TITLE_CHARS
from store.engine import Engine
from store.errors import MAX_IMPORT_PROBLEMS, ImportFormatError, ImportRejected, InvalidInput
from store.models import (
    Kind,
    MessageStatus,
    Record,
    Role,
    validate_sid,
    validate_stored_context,
    validate_user,
)

FORMAT = "hero-agent-export"
VERSION = 1

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

#: optional fields that must be text when a record carries them
_OPTIONAL_TEXT: dict[Kind, tuple[str, ...]] = {
    Kind.CONVERSATION: ("tail_digest",),
    Kind.MESSAGE: ("turn_id", "superseded_by"),
}

ConvKey = tuple[str, str]  # (context, conversation sid)


class Problems:
    """The problems found so far: the first ``MAX_IMPORT_PROBLEMS`` kept, all counted."""

    def __init__(self) -> None:
        self.items: list[ImportFormatError] = []
        self.total = 0

    def add(self, line: int, reason: str) -> None:
        self.total += 1
        if len(self.items) < MAX_IMPORT_PROBLEMS:
            self.items.append(ImportFormatError(line, reason))

    def raise_if_any(self) -> None:
        if self.total:
            self.items.sort(key=lambda p: p.line)
            raise ImportRejected(self.items, self.total)


@dataclass(slots=True)
class FileMessage:
    seq: int
    line: int
    user: str


@dataclass(slots=True)
class ImportPlan:
    """What the file holds (as much as the checks need) and, after the store pass, what to write."""

    #: (kind, context, sid) -> (user, line, conversation sid of a message or "")
    records_at: dict[tuple[str, str, str], tuple[str, int, str]] = field(default_factory=dict)
    #: per conversation the file writes messages into: message sid -> where it goes
    messages: dict[ConvKey, dict[str, FileMessage]] = field(default_factory=lambda: defaultdict(dict))
    #: conversations that messages refer to before (or without) the file defining them -> first line
    external: dict[ConvKey, int] = field(default_factory=dict)
    #: attachments: conversation -> (line, user) of each attachment the file puts into it
    attachments: dict[ConvKey, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    #: after the store pass: the message_count of every touched conversation once imported
    counts: dict[ConvKey, int] = field(default_factory=dict)
    #: after the store pass: conversations only in the store whose count the import changes -> owner
    store_counts_to_fix: dict[ConvKey, str] = field(default_factory=dict)

    def touched(self) -> set[ConvKey]:
        """Every conversation the import writes or writes messages into."""
        defined = {(ctx, sid) for kind, ctx, sid in self.records_at if kind == Kind.CONVERSATION.value}
        return defined | set(self.messages) | set(self.attachments)

    def conversation_owner(self, key: ConvKey) -> str | None:
        found = self.records_at.get((Kind.CONVERSATION.value, *key))
        return found[0] if found else None


# -- pass 1: the file -------------------------------------------------------------------------------


def file_lines(fp: IO[bytes]) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of every line; decoded one by one so a bad byte names its line."""
    for lineno, raw in enumerate(fp, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ImportFormatError(lineno, "not UTF-8 text") from None
        yield lineno, text.rstrip("\n").rstrip("\r")


def check_header(text: str) -> None:
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


def parse_line(lineno: int, text: str) -> tuple[Kind, Record]:
    """One record line, checked on its own; raises ImportFormatError naming the 1-based line."""
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
        validate_stored_context(record.get("context"))  # type: ignore[arg-type]
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
    for name in _OPTIONAL_TEXT.get(kind, ()):  # text when present (the re-run marks, the /v1 digest)
        if name in record and not isinstance(record[name], str):
            raise ImportFormatError(lineno, f"field {name!r} has the wrong type")
    if kind is Kind.MESSAGE and record["seq"] < 1:
        raise ImportFormatError(lineno, "seq must be a positive integer")
    return kind, record


def record_problems(kind: Kind, rec: Record, raw: str, max_message_chars: int) -> Iterator[str]:
    """What the store's API would refuse in a well-formed record: the limits it enforces on writes."""
    if kind in (Kind.MESSAGE, Kind.MEMORY):
        content = rec["content"]
        if len(content) > max_message_chars:
            yield (
                f"content of {len(content)} characters is over the limit of {max_message_chars} "
                "(agent.max_message_chars)"
            )
        if "\x00" in content:
            yield "content contains NUL characters"
    if kind is Kind.MESSAGE:
        if rec["role"] not in Role._value2member_map_:
            yield f"invalid role {rec['role']!r}"
        if rec.get("status", MessageStatus.COMPLETE.value) not in MessageStatus._value2member_map_:
            yield f"invalid status {rec.get('status')!r}"
    if kind is Kind.CONVERSATION:
        title = rec["title"]
        if len(title) > MAX_TITLE_CHARS or not title.isprintable():
            yield f"title must be at most {MAX_TITLE_CHARS} printable characters"
        tags = rec.get("tags", [])
        if not isinstance(tags, list) or len(tags) > MAX_TAGS or any(_bad_tag(t) for t in tags):
            yield f"tags must be a list of at most {MAX_TAGS} texts of at most 64 characters"
        digest = rec.get("tail_digest", "")
        if digest and (len(digest) > MAX_TAIL_DIGEST_CHARS or not digest.isalnum()):
            yield f"tail_digest must be at most {MAX_TAIL_DIGEST_CHARS} letters and digits"
    if "\\u" in raw.lower() and not _encodable(rec):
        yield "text holds a lone surrogate (not valid Unicode)"


def _bad_tag(tag: object) -> bool:
    return not isinstance(tag, str) or len(tag) > 64


def _encodable(rec: Record) -> bool:
    try:
        json.dumps(rec, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def scan_file(path: Path, max_message_chars: int) -> tuple[ImportPlan, Problems]:
    """Pass 1 (blocking): every line checked on its own and against the earlier ones. A file that is
    no export at all raises at once; other problems are returned, for the store pass to add to."""
    plan, problems = ImportPlan(), Problems()
    seqs: dict[tuple[str, str, int], int] = {}  # (context, conversation, seq) -> line
    lineno = 0
    with path.open("rb") as fp:
        for lineno, raw in file_lines(fp):
            if lineno == 1:
                check_header(raw)  # not an export at all: one problem is enough
                continue
            try:
                kind, rec = parse_line(lineno, raw)
            except ImportFormatError as exc:
                problems.add(exc.line, exc.reason)
                continue
            for reason in record_problems(kind, rec, raw, max_message_chars):
                problems.add(lineno, reason)
            key = (kind.value, rec["context"], rec["sid"])
            if key in plan.records_at:
                problems.add(lineno, f"{kind.value} {rec['sid']} appears twice in {rec['context']!r}")
                continue
            plan.records_at[key] = (rec["user_id"], lineno, rec.get("conversation_id") or "")
            if kind is Kind.MESSAGE:
                _scan_message(plan, problems, seqs, lineno, rec)
            elif kind is Kind.ATTACHMENT:
                _scan_attachment(plan, lineno, rec)
    if lineno == 0:
        raise ImportFormatError(1, "the file is empty")
    return plan, problems


def _scan_message(
    plan: ImportPlan, problems: Problems, seqs: dict[tuple[str, str, int], int], lineno: int, rec: Record
) -> None:
    conv: ConvKey = (rec["context"], rec["conversation_id"])
    if plan.conversation_owner(conv) is None:
        plan.external.setdefault(conv, lineno)
    first = seqs.setdefault((*conv, rec["seq"]), lineno)
    if first != lineno:
        problems.add(lineno, f"seq {rec['seq']} appears twice in one conversation (also on line {first})")
    plan.messages[conv][rec["sid"]] = FileMessage(rec["seq"], lineno, rec["user_id"])


def _scan_attachment(plan: ImportPlan, lineno: int, rec: Record) -> None:
    """An attachment belongs to a conversation of its own user, like a message (no seq)."""
    conv: ConvKey = (rec["context"], rec["conversation_id"])
    if plan.conversation_owner(conv) is None:
        plan.external.setdefault(conv, lineno)
    plan.attachments[conv].append((lineno, rec["user_id"]))


# -- pass 2: the file against the store ---------------------------------------------------------------


@dataclass(slots=True)
class _StoreView:
    """What the store holds that the checks need, read in one streaming pass per context."""

    conv_owner: dict[ConvKey, str] = field(default_factory=dict)
    #: file messages refused for moving a stored message: left out of the seq checks
    refused: set[tuple[str, str]] = field(default_factory=set)
    #: touched conversation -> message sid -> seq
    messages: dict[ConvKey, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))


async def check_against_store(engine: Engine, plan: ImportPlan, problems: Problems) -> None:
    """Pass 2: the file's records against the store's; fills ``plan.counts`` and
    ``plan.store_counts_to_fix``; raises ImportRejected listing every problem of both passes."""
    touched = plan.touched()
    view = await _read_store(engine, plan, touched, problems)
    for conv in sorted(touched):
        _check_conversation(plan, view, conv, problems)
    problems.raise_if_any()


async def _read_store(
    engine: Engine, plan: ImportPlan, touched: set[ConvKey], problems: Problems
) -> _StoreView:
    view = _StoreView()
    contexts = sorted({ctx for _, ctx, _ in plan.records_at})
    for ctx in contexts:
        async for kind, rec in engine.dump(ctx):
            sid, user = rec["sid"], rec["user_id"]
            mine = plan.records_at.get((kind.value, ctx, sid))
            if mine is not None and not _existing_ok(kind, rec, mine, problems):
                view.refused.add((ctx, sid))
            if kind is Kind.CONVERSATION and (ctx, sid) in touched:
                view.conv_owner[(ctx, sid)] = user
            elif kind is Kind.MESSAGE and (ctx, rec.get("conversation_id")) in touched:
                view.messages[(ctx, rec["conversation_id"])][sid] = int(rec["seq"])
    return view


def _existing_ok(kind: Kind, stored: Record, mine: tuple[str, int, str], problems: Problems) -> bool:
    """A file record whose sid the store already holds: same owner, and a message stays where it is."""
    user, line, conversation = mine
    sid = stored["sid"]
    if stored["user_id"] != user:
        problems.add(line, f"{kind.value} {sid} already belongs to another user in {stored['context']!r}")
        return False
    if kind is Kind.MESSAGE and stored.get("conversation_id") != conversation:
        where = stored.get("conversation_id")
        problems.add(line, f"message {sid} is already in conversation {where!r}: it cannot move")
        return False
    return True


def _check_conversation(plan: ImportPlan, view: _StoreView, conv: ConvKey, problems: Problems) -> None:
    """A touched conversation: known, one owner, and its seqs 1..N without gap once imported."""
    incoming = plan.messages.get(conv, {})
    owner = plan.conversation_owner(conv) or view.conv_owner.get(conv)
    if conv in plan.external and conv not in view.conv_owner:
        problems.add(
            plan.external[conv],
            f"record refers to conversation {conv[1]!r}, neither earlier in the file nor in the store",
        )
        return
    for line, user in plan.attachments.get(conv, []):
        if owner is not None and user != owner:
            problems.add(line, "attachment belongs to another user's conversation")
    foreign = {sid for sid, msg in incoming.items() if owner is not None and msg.user != owner}
    for sid in sorted(foreign, key=lambda sid: incoming[sid].line):
        problems.add(incoming[sid].line, "message belongs to another user's conversation")
    stored = view.messages.get(conv, {})
    for sid, msg in incoming.items():
        if sid in stored and stored[sid] != msg.seq:
            problems.add(msg.line, f"message {sid} is already stored at seq {stored[sid]}: it cannot move")
            foreign.add(sid)
    # a message refused above is left out of the seq checks (its refusal is the one to read)
    incoming = {
        sid: msg for sid, msg in incoming.items() if sid not in foreign and (conv[0], sid) not in view.refused
    }
    final = dict(stored)
    for sid, msg in incoming.items():
        final[sid] = msg.seq
    holders: dict[int, str] = {}
    for sid, seq in sorted(final.items(), key=lambda item: item[0] in incoming):
        other = holders.setdefault(seq, sid)
        if other != sid and sid in incoming and other not in incoming:
            problems.add(
                incoming[sid].line,
                f"seq {seq} of conversation {conv[1]!r} is already held by message {other} in the store",
            )
    _check_gap(conv, set(final.values()), incoming, problems)
    plan.counts[conv] = len(final)
    if plan.conversation_owner(conv) is None and owner is not None and len(final) != len(stored):
        plan.store_counts_to_fix[conv] = owner


def _check_gap(conv: ConvKey, seqs: set[int], incoming: dict[str, FileMessage], problems: Problems) -> None:
    missing = next((n for n in range(1, len(seqs) + 2) if n not in seqs), 0)
    above = sorted((m.seq, m.line) for m in incoming.values() if m.seq > missing)
    if not above:
        return
    seq, line = above[0]
    gap = f"seq {missing}" if seq == missing + 1 else f"seqs {missing} to {seq - 1}"
    problems.add(
        line,
        f"seq {seq} leaves a gap in conversation {conv[1]!r}: {gap} in neither the file nor the store",
    )
