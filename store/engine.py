"""The engine seam: the small interface every store engine implements.

Shaped after the OSIS verbs (``get``/``set``/``delete``/``exist``/``list``) on plain JSON records, plus
the few atomic primitives the domain needs and that cannot be built safely from those verbs:

* creating an ``AgentMessage`` assigns its ``seq`` (previous max + 1 in its conversation, gap-free,
  atomic across processes) and, in the same atomic step, touches the conversation (``message_count``
  +1, ``updated_at`` = now, ``last_channel`` = the message's channel); creating a message in a
  conversation that is missing from the scope raises :class:`~store.errors.NotFound`;
* deleting an ``AgentConversation`` deletes its messages in the same atomic step;
* ``claim``/``release``: a named lease per scope (turn locks across processes, update de-duplication);
* ``dump``/``restore``: raw records with their sids, for export/import;
* ``batch``: several of the calls above in one scope, in order (see :meth:`Engine.batch`).

Records are ``dict`` with JSON values. The engine owns ``sid`` (short lower-case base-36, allocated on
create unless ``restore`` brings one), ``context``/``user_id`` (always the scope's: a record is never
visible outside its scope, and a foreign sid behaves exactly like a missing one) and
``created_at``/``updated_at`` (ms since the epoch, set on create/update).
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, Self, TypeVar

import anyio

from store.errors import LeaseHeld
from store.models import JSON, Kind, Record, Scope

T = TypeVar("T")

#: filter operators, as key suffixes: ``seq__gt``; a bare key means equality
FILTER_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in")
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What ``Engine.list`` returns: records of one kind in one scope.

    ``filters``: ``{"conversation_id": "0a", "seq__gt": 10, "role__in": ["user", "assistant"]}``.
    ``order_by``/``descending``: sort key, ties broken by ``sid`` in the same direction.
    ``text``: when set, only records whose text (``content``, or ``title``) matches the words are
    returned, most relevant first (``order_by`` is then ignored and ``cursor`` unsupported).
    ``cursor``: the opaque ``next_cursor`` of the previous page.
    """

    filters: dict[str, JSON] = field(default_factory=dict)
    order_by: str = "created_at"
    descending: bool = False
    limit: int = 50
    cursor: str | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None = None


# -- batch steps: one engine call each, run together by ``Engine.batch`` ---------------------------


@dataclass(frozen=True, slots=True)
class GetStep:
    kind: Kind
    sid: str


@dataclass(frozen=True, slots=True)
class ListStep:
    kind: Kind
    query: ListQuery


@dataclass(frozen=True, slots=True)
class CountStep:
    kind: Kind
    filters: dict[str, JSON] | None = None


@dataclass(frozen=True, slots=True)
class CreateStep:
    kind: Kind
    fields: Record
    request_key: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateStep:
    kind: Kind
    sid: str
    fields: Record


@dataclass(frozen=True, slots=True)
class DeleteStep:
    kind: Kind
    sid: str


@dataclass(frozen=True, slots=True)
class ClaimStep:
    """``claim``; with ``required`` a refused claim stops the batch with :class:`LeaseHeld`."""

    key: str
    holder: str
    ttl_ms: int | None
    required: bool = True


@dataclass(frozen=True, slots=True)
class ReleaseStep:
    key: str
    holder: str


Step = GetStep | ListStep | CountStep | CreateStep | UpdateStep | DeleteStep | ClaimStep | ReleaseStep
#: steps that only read
READ_STEPS = (GetStep, ListStep, CountStep)


class Engine(ABC):
    """A store engine. An async context manager; ``open``/``aclose`` are idempotent."""

    name: str = "engine"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def aclose(self) -> None: ...

    @abstractmethod
    async def get(self, kind: Kind, scope: Scope, sid: str) -> Record | None:
        """The record, or None when missing or not in this scope."""

    @abstractmethod
    async def create(
        self, kind: Kind, scope: Scope, fields: Record, *, request_key: str | None = None
    ) -> Record:
        """Store a new record and return it whole (with sid, timestamps and, for messages, seq).

        ``request_key`` makes the create safe to repeat: a second create with the same key in the same
        scope returns the first record unchanged instead of creating another.
        """

    @abstractmethod
    async def update(self, kind: Kind, scope: Scope, sid: str, fields: Record) -> Record | None:
        """Merge ``fields`` into the record (store-owned fields are ignored); None when missing."""

    @abstractmethod
    async def delete(self, kind: Kind, scope: Scope, sid: str) -> bool:
        """Delete; False when missing. Deleting a conversation deletes its messages."""

    @abstractmethod
    async def list(self, kind: Kind, scope: Scope, query: ListQuery) -> Page[Record]: ...

    @abstractmethod
    async def count(self, kind: Kind, scope: Scope, filters: dict[str, JSON] | None = None) -> int: ...

    @abstractmethod
    async def claim(self, scope: Scope, key: str, holder: str, ttl_ms: int | None) -> bool:
        """Take the lease ``key`` for ``holder``.

        True when it was free, expired, or already held by ``holder`` (then renewed); False when
        another holder has it. ``ttl_ms=None`` never expires (used for de-duplication marks).
        """

    @abstractmethod
    async def release(self, scope: Scope, key: str, holder: str) -> None:
        """Drop the lease if ``holder`` has it; otherwise do nothing."""

    @abstractmethod
    async def contexts(self) -> builtins.list[str]:
        """Every context that holds at least one record, sorted."""

    @abstractmethod
    def dump(self, context: str) -> AsyncIterator[tuple[Kind, Record]]:
        """Every record of the context (all users, all kinds), in a stable order:
        kinds in ``Kind`` order, then by sid; messages after their conversations."""

    @abstractmethod
    async def restore(self, kind: Kind, record: Record) -> bool:
        """Write a dumped record as it is (sid, scope, timestamps, seq kept).

        Idempotent: an identical record already present is left alone and False is returned.
        A message whose conversation is missing is refused with InvalidInput.
        """

    async def restore_batch(self, items: Sequence[tuple[Kind, Record]]) -> int:
        """``restore`` each item in order; returns how many were written (not already identical).

        Engines that can should override this to write the batch atomically (all or nothing).
        """
        written = 0
        for kind, record in items:
            written += await self.restore(kind, record)
        return written

    async def ping(self) -> None:
        """Raise StoreUnavailable when the engine cannot serve requests."""
        return None

    async def batch(self, scope: Scope, steps: Sequence[Step]) -> builtins.list[object]:
        """Run ``steps`` in ``scope`` in order; each step's result (what its own call returns), in order.

        A refused :class:`ClaimStep` with ``required`` raises :class:`~store.errors.LeaseHeld`; any
        failure stops the batch. Engines that can override this to run the whole batch as ONE
        transaction (all or nothing, one commit; the embedded engine does). This default makes one
        call per step, so the steps before a failure stay done (put required claims first), and
        sends each run of adjacent reads at once (a remote engine pays one round trip for them).
        """
        results: builtins.list[object] = [None] * len(steps)
        i = 0
        while i < len(steps):
            end = i + 1
            if isinstance(steps[i], READ_STEPS):
                while end < len(steps) and isinstance(steps[end], READ_STEPS):
                    end += 1
            if end - i == 1:
                results[i] = await self.run_step(scope, steps[i])
            else:
                await self._reads_at_once(scope, steps, range(i, end), results)
            i = end
        return results

    async def _reads_at_once(
        self, scope: Scope, steps: Sequence[Step], indexes: range, results: builtins.list[object]
    ) -> None:
        async def one(i: int) -> None:
            results[i] = await self.run_step(scope, steps[i])

        try:
            async with anyio.create_task_group() as tg:
                for i in indexes:
                    tg.start_soon(one, i)
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None

    async def run_step(self, scope: Scope, step: Step) -> object:
        """One step as its own call."""
        match step:
            case GetStep(kind, sid):
                return await self.get(kind, scope, sid)
            case ListStep(kind, query):
                return await self.list(kind, scope, query)
            case CountStep(kind, filters):
                return await self.count(kind, scope, filters)
            case CreateStep(kind, fields, request_key):
                return await self.create(kind, scope, fields, request_key=request_key)
            case UpdateStep(kind, sid, fields):
                return await self.update(kind, scope, sid, fields)
            case DeleteStep(kind, sid):
                return await self.delete(kind, scope, sid)
            case ClaimStep(key, holder, ttl_ms, required):
                taken = await self.claim(scope, key, holder, ttl_ms)
                if required and not taken:
                    raise LeaseHeld(key)
                return taken
            case ReleaseStep(key, holder):
                await self.release(scope, key, holder)
                return None
        raise TypeError(f"not a batch step: {step!r}")
