"""What the Store does when its engine lacks a capability (:class:`~store.engine.Capabilities`).

:func:`with_fallbacks` gives the engine itself when it has every capability (the embedded engine and
our OSIS server: no cost at all), else a :class:`FallbackEngine` that hands the engine the steps it
runs and runs the others here, through steps the engine does have:

* no ``counts``: a ``CountStep`` pages through ``ListStep`` (``MAX_LIMIT`` records a page) and counts:
  one call per thousand records instead of one;
* no ``text_search``: a ``ListStep`` with ``text`` pages through every record of the kind (within its
  filters) and ranks them here by how often they have the words of the text (most first, then newest; a
  word matches the words it begins: no real stemming), one call per thousand records;
* no ``leases``: a lease is an ``AgentState`` record (key ``lease:<key>``, value ``{"holder",
  "expires_at"}``) claimed by read-then-write. That is NOT safe between processes (two can claim the
  same lease in a race): with such an engine run one process per store;
* no ``atomic_batch``: nothing to emulate; the Store's write order keeps a crash harmless (required
  claims first, then the user message, then the reads; the lease's release last, after the usage
  entries): a crash leaves at worst a lease that expires after its ttl, or usage entries without the
  release.

A batch that mixes both kinds of steps runs in order as several calls, so it is not atomic.
"""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from store.engine import (
    MAX_LIMIT,
    Capabilities,
    ClaimStep,
    CountStep,
    CreateStep,
    DelegatingEngine,
    DeleteStep,
    Engine,
    ListQuery,
    ListStep,
    Page,
    ReleaseStep,
    Results,
    Step,
    UpdateStep,
    settled,
)
from store.errors import InvalidInput
from store.leases import Claimed, Lease
from store.models import JSON, Kind, Record, Scope
from store.search import search_words

#: the field a text search looks in, per kind (as the engines index it)
TEXT_FIELDS: Final = {Kind.CONVERSATION: "title", Kind.MESSAGE: "content", Kind.MEMORY: "content"}
LEASE_PREFIX: Final = "lease:"
_WORD_RE = re.compile(r"\w+", re.UNICODE)


def with_fallbacks(engine: Engine) -> Engine:
    """``engine`` itself when it has every capability, else ``engine`` behind the fallbacks."""
    caps = engine.capabilities
    if caps.counts and caps.text_search and caps.leases:
        return engine
    return FallbackEngine(engine)


class FallbackEngine(DelegatingEngine):
    """An engine with every capability but ``atomic_batch``, over one that lacks some."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self.capabilities = Capabilities(atomic_batch=False)

    async def get_lease(self, scope: Scope, key: str) -> Lease | None:
        """None without engine leases (a lease record has no process identity): a dead holder is only
        seen when its lease lapses."""
        return await self.inner.get_lease(scope, key) if self.inner.capabilities.leases else None

    async def list_leases(self, context: str, prefix: str) -> builtins.list[Lease]:
        return await self.inner.list_leases(context, prefix) if self.inner.capabilities.leases else []

    async def batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        """Runs of steps the engine has go to it as one batch each; the others run here, in order."""
        caps = self.inner.capabilities
        out: builtins.list[object] = []
        run: builtins.list[Step] = []
        for step in steps:
            if caps.runs(step):
                run.append(step)
                continue
            if run:
                out += await self.inner.batch(scope, run)
                run = []
            out.append(settled(step, await _FALLBACKS[type(step)](self.inner, scope, step)))
        if run:
            out += await self.inner.batch(scope, run)
        return Results(steps, out)


async def _pages(engine: Engine, kind: Kind, scope: Scope, filters: dict[str, JSON]) -> list[Record]:
    """Every record of ``kind`` in ``scope`` matching ``filters``, a page of ``MAX_LIMIT`` per call."""
    out: list[Record] = []
    cursor: str | None = None
    while True:
        page = await engine.run(scope, ListStep(kind, ListQuery(filters, limit=MAX_LIMIT, cursor=cursor)))
        out += page.items
        cursor = page.next_cursor
        if cursor is None:
            return out


async def _count(engine: Engine, scope: Scope, step: CountStep) -> int:
    return len(await _pages(engine, step.kind, scope, step.filters or {}))


def _shared(wanted: list[str], text: str) -> int:
    """How often the text has the wanted words, a word matching every word it begins (``name`` ~
    ``named``: a poor man's stemming)."""
    words = [w.lower() for w in _WORD_RE.findall(text)]
    return sum(1 for x in words if any(x.startswith(w) for w in wanted))


async def _search(engine: Engine, scope: Scope, step: ListStep) -> Page[Record]:
    field = TEXT_FIELDS.get(step.kind)
    if field is None:
        raise InvalidInput(f"text search is not available for {step.kind.value}")
    if step.query.cursor is not None:
        raise InvalidInput("text search does not page with a cursor")
    wanted = search_words(step.query.text or "")
    if not wanted:
        return Page([])
    scored = []
    for rec in await _pages(engine, step.kind, scope, step.query.filters):
        shared = _shared(wanted, str(rec.get(field) or ""))
        if shared:
            scored.append((shared, int(rec.get("created_at") or 0), rec))
    scored.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return Page([rec for _, _, rec in scored[: step.query.limit]])


async def _lease_record(engine: Engine, scope: Scope, key: str) -> Record | None:
    query = ListQuery({"key": LEASE_PREFIX + key}, limit=1)
    items = (await engine.run(scope, ListStep(Kind.STATE, query))).items
    return items[0] if items else None


async def _claim(engine: Engine, scope: Scope, step: ClaimStep) -> Claimed:
    now = int(time.time() * 1000)
    rec = await _lease_record(engine, scope, step.key)
    expires = None if step.ttl_ms is None else now + int(step.ttl_ms)
    value = {"holder": step.holder, "expires_at": expires}
    if rec is None:
        fields: Record = {"key": LEASE_PREFIX + step.key, "value": value}
        await engine.run(scope, CreateStep(Kind.STATE, fields))
        return Claimed.TAKEN
    held: Any = rec.get("value")
    held_by = held.get("holder") if isinstance(held, dict) else None
    until = held.get("expires_at") if isinstance(held, dict) else None
    lapsed = until is not None and int(until) <= now
    if held_by not in (step.holder, step.replace) and not lapsed:
        return Claimed.REFUSED
    await engine.run(scope, UpdateStep(Kind.STATE, str(rec["sid"]), {"value": value}))
    if held_by == step.holder:
        return Claimed.RENEWED
    return Claimed.LAPSED if lapsed else Claimed.REPLACED


async def _release(engine: Engine, scope: Scope, step: ReleaseStep) -> None:
    rec = await _lease_record(engine, scope, step.key)
    held: Any = rec.get("value") if rec is not None else None
    if rec is not None and isinstance(held, dict) and held.get("holder") == step.holder:
        await engine.run(scope, DeleteStep(Kind.STATE, str(rec["sid"])))


_FALLBACKS: Final[dict[type[Step], Callable[[Engine, Scope, Any], Any]]] = {
    CountStep: _count,
    ListStep: _search,
    ClaimStep: _claim,
    ReleaseStep: _release,
}
