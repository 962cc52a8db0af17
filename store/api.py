"""The async store API the agent uses: domain operations on top of one :class:`~store.engine.Engine`.

Every call takes a :class:`~store.models.Scope`; ids from another user or context raise
:class:`~store.errors.NotFound` exactly like missing ones. Input is validated here, once, for every
engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from store.engine import MAX_LIMIT, Engine, ListQuery, Page
from store.errors import Conflict, InvalidInput, NotFound
from store.models import (
    BASE_FIELDS,
    AuditEntry,
    Conversation,
    Kind,
    Memory,
    Message,
    MessageStatus,
    Record,
    Role,
    Scope,
    StateEntry,
    UsageEntry,
    validate_sid,
)

MAX_TITLE_CHARS = 200
MAX_TAGS = 32
_WS_RE = re.compile(r"\s+")


def now_ms() -> int:
    return int(time.time() * 1000)


def memory_hash(content: str) -> str:
    """Dedupe key: case- and whitespace-insensitive SHA-256 of the content."""
    norm = _WS_RE.sub(" ", content.strip().lower())
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One row of a usage or audit summary (``key`` is a model, a tool or a day ``YYYY-MM-DD``)."""

    key: str
    count: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    total_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class ScopeStats:
    conversations: int
    archived_conversations: int
    messages: int
    memories: int
    tool_calls: int
    llm_calls: int
    prompt_tokens: int
    completion_tokens: int


def _check_limit(limit: int) -> int:
    if not isinstance(limit, int) or limit < 1 or limit > MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


class Store:
    """Domain operations over an engine. An async context manager that opens and closes the engine."""

    def __init__(self, engine: Engine, *, max_message_chars: int = 32_000) -> None:
        self.engine = engine
        self.max_message_chars = max_message_chars
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._local_locks: dict[tuple[str, str, str], anyio.Lock] = {}

    async def __aenter__(self) -> Store:
        await self.engine.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.aclose()

    async def aclose(self) -> None:
        await self.engine.aclose()

    # -- conversations -------------------------------------------------------------------------

    async def create_conversation(
        self,
        scope: Scope,
        title: str = "",
        *,
        channel: str = "",
        tags: Iterable[str] = (),
        is_group: bool = False,
        request_key: str | None = None,
    ) -> Conversation:
        rec = Conversation(
            title=self._title(title),
            tags=self._tags(tags),
            last_channel=channel,
            is_group=is_group,
        ).to_record()
        out = await self.engine.create(Kind.CONVERSATION, scope, _fields(rec), request_key=request_key)
        return Conversation.from_record(out)

    async def get_conversation(self, scope: Scope, sid: str) -> Conversation:
        rec = await self.engine.get(Kind.CONVERSATION, scope, validate_sid(sid))
        if rec is None:
            raise NotFound("conversation", sid)
        return Conversation.from_record(rec)

    async def list_conversations(
        self,
        scope: Scope,
        *,
        limit: int = 50,
        cursor: str | None = None,
        archived: bool | None = False,
    ) -> Page[Conversation]:
        """Most recently updated first. ``archived``: False hides archived ones, True shows only
        them, None shows all."""
        filters: dict[str, object] = {}
        if archived is not None:
            filters["is_archived"] = archived
        page = await self.engine.list(
            Kind.CONVERSATION,
            scope,
            ListQuery(filters=filters, order_by="updated_at", descending=True, limit=_check_limit(limit),
                      cursor=cursor),
        )
        return Page([Conversation.from_record(r) for r in page.items], page.next_cursor)

    async def rename_conversation(self, scope: Scope, sid: str, title: str) -> Conversation:
        return await self._update_conversation(scope, sid, {"title": self._title(title)})

    async def archive_conversation(self, scope: Scope, sid: str, archived: bool = True) -> Conversation:
        return await self._update_conversation(scope, sid, {"is_archived": bool(archived)})

    async def tag_conversation(self, scope: Scope, sid: str, tags: Iterable[str]) -> Conversation:
        return await self._update_conversation(scope, sid, {"tags": list(self._tags(tags))})

    async def delete_conversation(self, scope: Scope, sid: str) -> None:
        """Hard delete of the conversation and all its messages (the privacy delete)."""
        if not await self.engine.delete(Kind.CONVERSATION, scope, validate_sid(sid)):
            raise NotFound("conversation", sid)

    async def clear_conversation(self, scope: Scope, sid: str) -> Conversation:
        """Move the clear boundary to the last message: earlier turns stay stored (archived) but
        ``history`` no longer returns them."""
        conv = await self.get_conversation(scope, sid)
        last = await self._last_seq(scope, sid)
        return await self._update_conversation(scope, sid, {"clear_seq": max(last, conv.clear_seq)})

    async def set_summary_boundary(self, scope: Scope, sid: str, summary_seq: int) -> Conversation:
        """Record that the summary message at ``summary_seq`` stands for every earlier message."""
        return await self._update_conversation(scope, sid, {"summary_seq": int(summary_seq)})

    async def _update_conversation(self, scope: Scope, sid: str, fields: dict[str, object]) -> Conversation:
        rec = await self.engine.update(Kind.CONVERSATION, scope, validate_sid(sid), fields)
        if rec is None:
            raise NotFound("conversation", sid)
        return Conversation.from_record(rec)

    async def _last_seq(self, scope: Scope, conversation_id: str) -> int:
        page = await self.engine.list(
            Kind.MESSAGE,
            scope,
            ListQuery(filters={"conversation_id": conversation_id}, order_by="seq", descending=True, limit=1),
        )
        return int(page.items[0]["seq"]) if page.items else 0

    # -- messages ------------------------------------------------------------------------------

    async def append_message(
        self,
        scope: Scope,
        conversation_id: str,
        role: Role | str,
        content: str,
        *,
        channel: str,
        tool_calls: str = "",
        tool_call_id: str = "",
        name: str = "",
        sender: str = "",
        status: MessageStatus | str = MessageStatus.COMPLETE,
        model: str = "",
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        message_type: str = "",
        request_key: str | None = None,
        extra: dict[str, object] | None = None,
    ) -> Message:
        """Append a message; the store assigns ``seq`` (gap-free per conversation)."""
        role = Role(role).value if role in Role._value2member_map_ else _bad(f"invalid role {role!r}")
        status = (
            MessageStatus(status).value
            if status in MessageStatus._value2member_map_
            else _bad(f"invalid status {status!r}")
        )
        self._check_content(content)
        if tool_calls:
            try:
                if not isinstance(json.loads(tool_calls), list):
                    raise ValueError
            except ValueError:
                raise InvalidInput("tool_calls must be a JSON list") from None
        msg = Message(
            conversation_id=validate_sid(conversation_id),
            role=role,
            content=content,
            channel=channel,
            timestamp=now_ms(),
            tool_calls=tool_calls,
            tool_call_id=tool_call_id,
            name=name,
            sender=sender,
            status=status,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            message_type=message_type,
        )
        if extra:
            msg.extra = dict(extra)
        rec = await self.engine.create(Kind.MESSAGE, scope, _fields(msg.to_record()), request_key=request_key)
        return Message.from_record(rec)

    async def update_message(self, scope: Scope, sid: str, **fields: object) -> Message:
        """Change a stored message (final content, status). ``seq`` and ``conversation_id`` are fixed."""
        fields.pop("seq", None)
        fields.pop("conversation_id", None)
        if "content" in fields:
            self._check_content(str(fields["content"]))
        if "status" in fields and fields["status"] not in MessageStatus._value2member_map_:
            raise InvalidInput(f"invalid status {fields['status']!r}")
        rec = await self.engine.update(Kind.MESSAGE, scope, validate_sid(sid), dict(fields))
        if rec is None:
            raise NotFound("message", sid)
        return Message.from_record(rec)

    async def get_message(self, scope: Scope, sid: str) -> Message:
        rec = await self.engine.get(Kind.MESSAGE, scope, validate_sid(sid))
        if rec is None:
            raise NotFound("message", sid)
        return Message.from_record(rec)

    async def history(self, scope: Scope, conversation_id: str, limit: int = 50) -> list[Message]:
        """The last ``limit`` messages after the clear boundary, oldest first.

        When the conversation has a compaction summary, the window starts at the summary message.
        """
        conv = await self.get_conversation(scope, conversation_id)
        floor = max(conv.clear_seq, conv.summary_seq - 1 if conv.summary_seq else 0)
        page = await self.engine.list(
            Kind.MESSAGE,
            scope,
            ListQuery(
                filters={"conversation_id": conversation_id, "seq__gt": floor},
                order_by="seq",
                descending=True,
                limit=_check_limit(limit),
            ),
        )
        return [Message.from_record(r) for r in reversed(page.items)]

    async def list_messages(
        self,
        scope: Scope,
        conversation_id: str,
        *,
        limit: int = 100,
        cursor: str | None = None,
        include_archived: bool = True,
        descending: bool = False,
    ) -> Page[Message]:
        """Page through a conversation in ``seq`` order, archived (cleared) turns included by default."""
        conv = await self.get_conversation(scope, conversation_id)
        filters: dict[str, object] = {"conversation_id": conversation_id}
        if not include_archived and conv.clear_seq:
            filters["seq__gt"] = conv.clear_seq
        page = await self.engine.list(
            Kind.MESSAGE,
            scope,
            ListQuery(filters=filters, order_by="seq", descending=descending, limit=_check_limit(limit),
                      cursor=cursor),
        )
        return Page([Message.from_record(r) for r in page.items], page.next_cursor)

    async def search_messages(self, scope: Scope, text: str, *, limit: int = 20) -> list[Message]:
        """Messages of this scope whose content matches ``text``, most relevant first."""
        if not text.strip():
            return []
        page = await self.engine.list(Kind.MESSAGE, scope, ListQuery(text=text, limit=_check_limit(limit)))
        return [Message.from_record(r) for r in page.items]

    # -- memories ------------------------------------------------------------------------------

    async def add_memory(
        self,
        scope: Scope,
        content: str,
        *,
        kind: str = "fact",
        source_conversation_id: str = "",
        source_channel: str = "",
    ) -> tuple[Memory, bool]:
        """Add a memory unless an identical one (by hash) exists; returns (memory, created)."""
        content = content.strip()
        if not content:
            raise InvalidInput("memory content is empty")
        self._check_content(content)
        h = memory_hash(content)
        existing = await self.engine.list(Kind.MEMORY, scope, ListQuery(filters={"hash": h}, limit=1))
        if existing.items:
            return Memory.from_record(existing.items[0]), False
        mem = Memory(
            content=content,
            kind=kind,
            source_conversation_id=source_conversation_id,
            source_channel=source_channel,
            hash=h,
        )
        rec = await self.engine.create(
            Kind.MEMORY, scope, _fields(mem.to_record()), request_key=f"memory:{h}"
        )
        return Memory.from_record(rec), True

    async def list_memories(
        self, scope: Scope, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Memory]:
        """Newest first."""
        page = await self.engine.list(
            Kind.MEMORY,
            scope,
            ListQuery(order_by="created_at", descending=True, limit=_check_limit(limit), cursor=cursor),
        )
        return Page([Memory.from_record(r) for r in page.items], page.next_cursor)

    async def get_memory(self, scope: Scope, sid: str) -> Memory:
        rec = await self.engine.get(Kind.MEMORY, scope, validate_sid(sid))
        if rec is None:
            raise NotFound("memory", sid)
        return Memory.from_record(rec)

    async def delete_memory(self, scope: Scope, sid: str) -> None:
        if not await self.engine.delete(Kind.MEMORY, scope, validate_sid(sid)):
            raise NotFound("memory", sid)

    async def search_memories(self, scope: Scope, text: str, *, limit: int = 10) -> list[Memory]:
        """Memories matching any word of ``text``, most relevant first."""
        if not text.strip():
            return []
        page = await self.engine.list(Kind.MEMORY, scope, ListQuery(text=text, limit=_check_limit(limit)))
        return [Memory.from_record(r) for r in page.items]

    # -- audit and usage -----------------------------------------------------------------------

    async def append_audit(self, scope: Scope, entry: AuditEntry) -> AuditEntry:
        rec = await self.engine.create(Kind.AUDIT, scope, _fields(entry.to_record()))
        return AuditEntry.from_record(rec)

    async def list_audit(
        self, scope: Scope, *, limit: int = 100, cursor: str | None = None, conversation_id: str | None = None
    ) -> Page[AuditEntry]:
        filters = {"conversation_id": conversation_id} if conversation_id else {}
        page = await self.engine.list(
            Kind.AUDIT, scope,
            ListQuery(filters=filters, order_by="created_at", descending=True, limit=_check_limit(limit),
                      cursor=cursor),
        )
        return Page([AuditEntry.from_record(r) for r in page.items], page.next_cursor)

    async def append_usage(self, scope: Scope, entry: UsageEntry) -> UsageEntry:
        rec = await self.engine.create(Kind.USAGE, scope, _fields(entry.to_record()))
        return UsageEntry.from_record(rec)

    async def list_usage(
        self, scope: Scope, *, limit: int = 100, cursor: str | None = None, conversation_id: str | None = None
    ) -> Page[UsageEntry]:
        filters = {"conversation_id": conversation_id} if conversation_id else {}
        page = await self.engine.list(
            Kind.USAGE, scope,
            ListQuery(filters=filters, order_by="created_at", descending=True, limit=_check_limit(limit),
                      cursor=cursor),
        )
        return Page([UsageEntry.from_record(r) for r in page.items], page.next_cursor)

    async def usage_summary(self, scope: Scope, *, by: str = "model") -> list[Aggregate]:
        """Token and call totals per ``model`` or per ``day`` (UTC), largest first."""
        if by not in ("model", "day"):
            raise InvalidInput("group usage by 'model' or 'day'")
        acc: dict[str, list[float]] = {}
        async for rec in self._all(Kind.USAGE, scope):
            key = rec.get("model", "") if by == "model" else _day(rec["created_at"])
            a = acc.setdefault(key, [0, 0, 0, 0, 0.0])
            a[0] += 1
            a[1] += int(rec.get("prompt_tokens", 0))
            a[2] += int(rec.get("completion_tokens", 0))
            a[3] += 0 if rec.get("ok", True) else 1
            a[4] += float(rec.get("latency_ms", 0.0))
        return _aggregates(acc)

    async def audit_summary(self, scope: Scope, *, by: str = "tool") -> list[Aggregate]:
        """Tool executions per ``tool`` or per ``day`` (UTC)."""
        if by not in ("tool", "day"):
            raise InvalidInput("group audit by 'tool' or 'day'")
        acc: dict[str, list[float]] = {}
        async for rec in self._all(Kind.AUDIT, scope):
            key = rec.get("tool", "") if by == "tool" else _day(rec["created_at"])
            a = acc.setdefault(key, [0, 0, 0, 0, 0.0])
            a[0] += 1
            a[3] += 0 if rec.get("ok", True) else 1
            a[4] += float(rec.get("duration_ms", 0.0))
        return _aggregates(acc)

    async def stats(self, scope: Scope) -> ScopeStats:
        usage = await self.usage_summary(scope, by="model")
        return ScopeStats(
            conversations=await self.engine.count(Kind.CONVERSATION, scope, {"is_archived": False}),
            archived_conversations=await self.engine.count(Kind.CONVERSATION, scope, {"is_archived": True}),
            messages=await self.engine.count(Kind.MESSAGE, scope),
            memories=await self.engine.count(Kind.MEMORY, scope),
            tool_calls=await self.engine.count(Kind.AUDIT, scope),
            llm_calls=sum(a.count for a in usage),
            prompt_tokens=sum(a.prompt_tokens for a in usage),
            completion_tokens=sum(a.completion_tokens for a in usage),
        )

    async def _all(self, kind: Kind, scope: Scope) -> AsyncIterator[Record]:
        cursor: str | None = None
        while True:
            page = await self.engine.list(kind, scope, ListQuery(limit=MAX_LIMIT, cursor=cursor))
            for rec in page.items:
                yield rec
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    # -- per-scope state -----------------------------------------------------------------------

    async def get_state(self, scope: Scope, key: str) -> str | None:
        page = await self.engine.list(Kind.STATE, scope, ListQuery(filters={"key": key}, limit=1))
        return StateEntry.from_record(page.items[0]).value if page.items else None

    async def set_state(self, scope: Scope, key: str, value: str) -> None:
        page = await self.engine.list(Kind.STATE, scope, ListQuery(filters={"key": key}, limit=1))
        if page.items:
            await self.engine.update(Kind.STATE, scope, page.items[0]["sid"], {"value": value})
        else:
            rec = StateEntry(key=key, value=value).to_record()
            await self.engine.create(Kind.STATE, scope, _fields(rec), request_key=f"state:{key}")
            # a concurrent creator may have won the request key: make our value the current one
            await self.set_state_existing(scope, key, value)

    async def set_state_existing(self, scope: Scope, key: str, value: str) -> None:
        page = await self.engine.list(Kind.STATE, scope, ListQuery(filters={"key": key}, limit=1))
        if page.items and page.items[0].get("value") != value:
            await self.engine.update(Kind.STATE, scope, page.items[0]["sid"], {"value": value})

    async def delete_state(self, scope: Scope, key: str) -> None:
        page = await self.engine.list(Kind.STATE, scope, ListQuery(filters={"key": key}, limit=1))
        for rec in page.items:
            await self.engine.delete(Kind.STATE, scope, rec["sid"])

    # -- leases --------------------------------------------------------------------------------

    async def claim_once(self, scope: Scope, key: str) -> bool:
        """True the first time ``key`` is claimed in this scope, by anyone, ever (de-duplication)."""
        # a fresh holder per call: a holder re-claiming its own lease succeeds (renewal), which would
        # make every call look like the first
        return await self.engine.claim(scope, f"once:{key}", f"{self._holder}:{uuid.uuid4().hex}", None)

    @asynccontextmanager
    async def conversation_lock(
        self, scope: Scope, conversation_id: str, *, ttl_s: float = 600.0, wait_s: float = 600.0
    ) -> AsyncIterator[None]:
        """Serialize turns of one conversation, in this process and across processes.

        Waits up to ``wait_s`` (then raises Conflict); the lease expires after ``ttl_s`` so a
        crashed holder cannot block the conversation forever.
        """
        key = (scope.context, scope.user_id, conversation_id)
        lock = self._local_locks.setdefault(key, anyio.Lock())
        lease = f"turn:{conversation_id}"
        # one holder per Store: the local lock already serializes this process, and a lease left
        # behind when the release failed (store briefly down) is then retaken at once, not after ttl_s
        holder = self._holder
        async with lock:
            delay = 0.005
            deadline = anyio.current_time() + wait_s
            while not await self.engine.claim(scope, lease, holder, int(ttl_s * 1000)):
                if anyio.current_time() > deadline:
                    raise Conflict("the conversation is busy with another turn")
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.1)
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await self.engine.release(scope, lease, holder)

    # -- validation ----------------------------------------------------------------------------

    def _check_content(self, content: str) -> None:
        if not isinstance(content, str):
            raise InvalidInput("content must be text")
        if len(content) > self.max_message_chars:
            raise InvalidInput(
                f"message too large: {len(content)} characters, the limit is {self.max_message_chars}"
            )
        if "\x00" in content:
            raise InvalidInput("content contains NUL characters")

    @staticmethod
    def _title(title: str) -> str:
        if not isinstance(title, str):
            raise InvalidInput("title must be text")
        title = title.strip()
        if len(title) > MAX_TITLE_CHARS:
            raise InvalidInput(f"title longer than {MAX_TITLE_CHARS} characters")
        if any(not ch.isprintable() for ch in title):
            raise InvalidInput("title contains control characters")
        return title

    @staticmethod
    def _tags(tags: Iterable[str]) -> tuple[str, ...]:
        out = tuple(dict.fromkeys(str(t).strip() for t in tags if str(t).strip()))
        if len(out) > MAX_TAGS or any(len(t) > 64 for t in out):
            raise InvalidInput(f"at most {MAX_TAGS} tags of at most 64 characters")
        return out


def _fields(rec: dict[str, object]) -> dict[str, object]:
    """A record without the store-owned fields (the engine sets those)."""
    return {k: v for k, v in rec.items() if k not in BASE_FIELDS}


def _bad(reason: str) -> str:
    raise InvalidInput(reason)


def _day(ms: object) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(int(ms) / 1000))  # type: ignore[call-overload]


def _aggregates(acc: dict[str, list[float]]) -> list[Aggregate]:
    rows = [
        Aggregate(key=k, count=int(a[0]), prompt_tokens=int(a[1]), completion_tokens=int(a[2]),
                  errors=int(a[3]), total_ms=a[4])
        for k, a in acc.items()
    ]
    rows.sort(key=lambda r: (-r.count, r.key))
    return rows
