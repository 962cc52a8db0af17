"""Audit and usage entries: append, list with paging, aggregate per model/tool/day; scope stats:
``store.records``. The stats count every kind of a scope, but they are read next to the usage totals
(``/stats``, ``usage`` sub-commands) and built on them, so they live with the records."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from store.api.base import check_limit, store_fields
from store.engine import MAX_LIMIT, Engine, ListQuery, Page
from store.errors import InvalidInput
from store.models import AuditEntry, Kind, Record, Scope, UsageEntry


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One row of a usage or audit summary (``key`` is a model, a tool or a day ``YYYY-MM-DD``; for
    usage grouped by ``day_model`` it is ``"<day> <model>"`` and ``day`` and ``model`` hold the parts)."""

    key: str
    count: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    total_ms: float = 0.0
    day: str = ""
    model: str = ""


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``created_at`` from ``since`` (inclusive) to ``until`` (exclusive), in ms; None is open."""

    since: int | None = None
    until: int | None = None

    def filters(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.since is not None:
            out["created_at__gte"] = self.since
        if self.until is not None:
            out["created_at__lt"] = self.until
        return out


ALL_TIME = TimeRange()


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


class Records:
    """The append-only entries (tool audit, model usage) and what is summed from them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def append_audit(self, scope: Scope, entry: AuditEntry) -> AuditEntry:
        rec = await self.engine.create(Kind.AUDIT, scope, store_fields(entry.to_record()))
        return AuditEntry.from_record(rec)

    async def list_audit(
        self, scope: Scope, *, limit: int = 100, cursor: str | None = None, conversation_id: str | None = None
    ) -> Page[AuditEntry]:
        page = await self._newest(Kind.AUDIT, scope, limit, cursor, conversation_id)
        return Page([AuditEntry.from_record(r) for r in page.items], page.next_cursor)

    async def append_usage(self, scope: Scope, entry: UsageEntry) -> UsageEntry:
        rec = await self.engine.create(Kind.USAGE, scope, store_fields(entry.to_record()))
        return UsageEntry.from_record(rec)

    async def list_usage(
        self,
        scope: Scope,
        *,
        limit: int = 100,
        cursor: str | None = None,
        conversation_id: str | None = None,
        period: TimeRange = ALL_TIME,
    ) -> Page[UsageEntry]:
        page = await self._newest(Kind.USAGE, scope, limit, cursor, conversation_id, period=period)
        return Page([UsageEntry.from_record(r) for r in page.items], page.next_cursor)

    async def _newest(
        self,
        kind: Kind,
        scope: Scope,
        limit: int,
        cursor: str | None,
        conversation_id: str | None,
        *,
        period: TimeRange = ALL_TIME,
    ) -> Page[dict[str, object]]:
        """Entries of ``kind``, newest first, optionally of one conversation and one period."""
        filters: dict[str, object] = {"conversation_id": conversation_id} if conversation_id else {}
        filters.update(period.filters())
        query = ListQuery(
            filters=filters, order_by="created_at", descending=True, limit=check_limit(limit), cursor=cursor
        )
        return await self.engine.list(kind, scope, query)

    async def usage_summary(
        self, scope: Scope, *, by: str = "model", period: TimeRange = ALL_TIME
    ) -> list[Aggregate]:
        """Token and call totals per ``model``, per ``day`` (UTC) or per ``day_model`` (each model
        on each UTC day), in ``period``. ``model`` and ``day``: largest first; ``day_model``: by day,
        then model (the order a chart draws them in)."""
        if by not in ("model", "day", "day_model"):
            raise InvalidInput("group usage by 'model', 'day' or 'day_model'")
        acc: dict[str, list[float]] = {}
        async for rec in self._all(Kind.USAGE, scope, period.filters()):
            model, day = str(rec.get("model", "")), _day(rec["created_at"])
            key = model if by == "model" else day if by == "day" else f"{day} {model}"
            a = acc.setdefault(key, [0, 0, 0, 0, 0.0])
            a[0] += 1
            a[1] += int(rec.get("prompt_tokens", 0))
            a[2] += int(rec.get("completion_tokens", 0))
            a[3] += 0 if rec.get("ok", True) else 1
            a[4] += float(rec.get("latency_ms", 0.0))
        if by == "day_model":
            rows = [_aggregate(k, a, *k.split(" ", 1)) for k, a in acc.items()]
            return sorted(rows, key=lambda r: (r.day, r.model))
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

    async def _all(
        self, kind: Kind, scope: Scope, filters: dict[str, object] | None = None
    ) -> AsyncIterator[Record]:
        cursor: str | None = None
        while True:
            query = ListQuery(filters=dict(filters or {}), limit=MAX_LIMIT, cursor=cursor)
            page = await self.engine.list(kind, scope, query)
            for rec in page.items:
                yield rec
            if not page.next_cursor:
                return
            cursor = page.next_cursor


def _day(ms: object) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(int(ms) / 1000))  # type: ignore[call-overload]


def _aggregate(key: str, a: list[float], day: str = "", model: str = "") -> Aggregate:
    return Aggregate(
        key=key,
        count=int(a[0]),
        prompt_tokens=int(a[1]),
        completion_tokens=int(a[2]),
        errors=int(a[3]),
        total_ms=a[4],
        day=day,
        model=model,
    )


def _aggregates(acc: dict[str, list[float]]) -> list[Aggregate]:
    rows = [_aggregate(k, a) for k, a in acc.items()]
    rows.sort(key=lambda r: (-r.count, r.key))
    return rows
