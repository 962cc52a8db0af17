"""Memories: add (deduplicated by content hash), list, get, delete, relevance search: ``store.memories``."""

from __future__ import annotations

import builtins

from store.api.base import Rules, check_limit, memory_hash, store_fields
from store.engine import Engine, ListQuery, ListStep, Page, Step
from store.errors import InvalidInput, NotFound
from store.models import Kind, Memory, Scope, validate_sid


def recall_steps(text: str, matching: int, recent: int) -> tuple[ListStep | None, ListStep | None]:
    """The reads that recall memories for a turn: those matching the words of ``text`` (at most
    ``matching``; None when there are none to read) and the newest ``recent`` (None for 0)."""
    match = (
        ListStep(Kind.MEMORY, ListQuery(text=text, limit=check_limit(matching)))
        if matching > 0 and text.strip()
        else None
    )
    newest = (
        ListStep(Kind.MEMORY, ListQuery(order_by="created_at", descending=True, limit=check_limit(recent)))
        if recent > 0
        else None
    )
    return match, newest


class Memories:
    """What the agent remembers of a user across conversations (checked by the message rules)."""

    def __init__(self, engine: Engine, rules: Rules) -> None:
        self.engine = engine
        self.rules = rules

    async def add(
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
        self.rules.check_text(content, what="memory")
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
            Kind.MEMORY, scope, store_fields(mem.to_record()), request_key=f"memory:{h}"
        )
        return Memory.from_record(rec), True

    async def list(self, scope: Scope, *, limit: int = 100, cursor: str | None = None) -> Page[Memory]:
        """Newest first."""
        page = await self.engine.list(
            Kind.MEMORY,
            scope,
            ListQuery(order_by="created_at", descending=True, limit=check_limit(limit), cursor=cursor),
        )
        return Page([Memory.from_record(r) for r in page.items], page.next_cursor)

    async def get(self, scope: Scope, sid: str) -> Memory:
        rec = await self.engine.get(Kind.MEMORY, scope, validate_sid(sid))
        if rec is None:
            raise NotFound("memory", sid)
        return Memory.from_record(rec)

    async def delete(self, scope: Scope, sid: str) -> None:
        if not await self.engine.delete(Kind.MEMORY, scope, validate_sid(sid)):
            raise NotFound("memory", sid)

    async def recall(
        self, scope: Scope, text: str, matching: int, recent: int
    ) -> tuple[builtins.list[Memory], builtins.list[Memory]]:
        """What a turn recalls (see :func:`recall_steps`), as one read beside the writes
        (:meth:`~store.engine.Engine.read`): ``(matching, newest)``. A turn that opens with it reads
        them here instead of in its opening (``agent/turn/early.py``)."""
        match, newest = recall_steps(text, matching, recent)
        steps: builtins.list[Step] = [s for s in (match, newest) if s is not None]
        if not steps:
            return [], []
        results = await self.engine.read(scope, steps)

        def memories(step: ListStep | None) -> builtins.list[Memory]:
            return [Memory.from_record(r) for r in results.of(step).items] if step is not None else []

        return memories(match), memories(newest)

    async def search(self, scope: Scope, text: str, *, limit: int = 10) -> builtins.list[Memory]:
        """Memories matching any word of ``text``, most relevant first."""
        if not text.strip():
            return []
        page = await self.engine.list(Kind.MEMORY, scope, ListQuery(text=text, limit=check_limit(limit)))
        return [Memory.from_record(r) for r in page.items]
