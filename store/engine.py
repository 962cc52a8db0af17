"""The engine seam: the small interface every store engine implements.

Shaped after the OSIS verbs (``get``/``set``/``delete``/``exist``/``list``) on plain JSON records, plus
the few atomic primitives the domain needs and that cannot be built safely from those verbs:

* creating an ``AgentMessage`` assigns its ``seq`` (previous max + 1 in its conversation, gap-free,
  atomic across processes) and, in the same atomic step, touches the conversation (``message_count``
  +1, ``updated_at`` = now, ``last_channel`` = the message's channel); creating a message in a
  conversation that is missing from the scope raises :class:`~store.errors.NotFound`;
* deleting an ``AgentConversation`` deletes its messages and attachments in the same atomic step;
* ``claim``/``release``: a named lease per scope (turn locks across processes, update de-duplication),
  with the holder's process identity and a compare-and-swap take-over (``replace``, see
  :mod:`store.leases`); ``get_lease``/``list_leases`` read them back;
* ``MarkCutStep``: the markers of a conversation's cut turn (see :mod:`store.cut_turns`);
* ``dump``/``restore``: raw records with their sids, for export/import;
* ``batch``: several of the calls above in one scope, in order (see :meth:`Engine.batch`).

Records are ``dict`` with JSON values. The engine owns ``sid`` (short lower-case base-36, allocated on
create unless ``restore`` brings one), ``context``/``user_id`` (always the scope's: a record is never
visible outside its scope, and a foreign sid behaves exactly like a missing one) and
``created_at``/``updated_at`` (ms since the epoch, set on create/update).
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Optional, Self, TypeVar, cast

from store import cut_turns
from store.errors import InvalidInput, LeaseHeld, UnsupportedOperation
from store.leases import Claimed, Lease, LeaseOwner
from store.models import JSON, Kind, Record, Scope, validate_stored_context

T = TypeVar("T")

#: what :meth:`Engine.batch_early` answers beside the results: None (durable already), or a future
#: settled once the batch's commit is durable (hero-agent runs anyio on asyncio only)
Durable = Optional["asyncio.Future[None]"]

#: filter operators, as key suffixes: ``seq__gt``; a bare key means equality
FILTER_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in")
MAX_LIMIT = 1000


def check_limit(limit: int) -> int:
    """``limit`` when it is a page size an engine serves (1 to :data:`MAX_LIMIT`; not a bool)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


#: records per read of an engine's ``dump``
DUMP_PAGE: Final = 500

#: one page of a context's records of one kind, the ``limit`` after sid ``after`` in sid order
ReadPage = Callable[[Kind, str, int], Awaitable[list[Record]]]


async def dump_in_pages(context: str, read_page: ReadPage) -> AsyncIterator[tuple[Kind, Record]]:
    """``Engine.dump`` for an engine that can read a page of records after a sid: kind by kind, a
    page of :data:`DUMP_PAGE` at a time, so a large context is never held in memory at once."""
    validate_stored_context(context)
    for kind in Kind:
        after = ""
        while True:
            page = await read_page(kind, after, DUMP_PAGE)
            for rec in page:
                yield kind, rec
            if len(page) < DUMP_PAGE:
                break
            after = page[-1]["sid"]


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

R_co = TypeVar("R_co", covariant=True)
R = TypeVar("R")


class StepOf(Generic[R_co]):
    """Base of the batch steps: ``R_co`` is what the step returns (see :meth:`Results.of`)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class GetStep(StepOf["Record | None"]):
    """The record, or None when missing or not in this scope."""

    kind: Kind
    sid: str


@dataclass(frozen=True, slots=True)
class ListStep(StepOf["Page[Record]"]):
    kind: Kind
    query: ListQuery


@dataclass(frozen=True, slots=True)
class CountStep(StepOf[int]):
    kind: Kind
    filters: dict[str, JSON] | None = None


@dataclass(frozen=True, slots=True)
class CreateStep(StepOf[Record]):
    """Store a new record; it comes back whole (sid, timestamps and, for messages, seq).

    ``request_key`` makes the create safe to repeat: a second create with the same key in the same
    scope returns the first record unchanged instead of creating another.
    """

    kind: Kind
    fields: Record
    request_key: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateStep(StepOf["Record | None"]):
    """Merge ``fields`` into the record (store-owned fields are ignored); None when missing."""

    kind: Kind
    sid: str
    fields: Record


@dataclass(frozen=True, slots=True)
class DeleteStep(StepOf[bool]):
    """Delete; False when missing. Deleting a conversation deletes its messages."""

    kind: Kind
    sid: str


@dataclass(frozen=True, slots=True)
class ClaimStep(StepOf[Claimed]):
    """Take the lease ``key`` for ``holder``, recording ``owner`` (its process) with it.

    Truthy (the :class:`~store.leases.Claimed` says how) when it was free, lapsed, already held by
    ``holder`` (then renewed), or held by ``replace`` (a compare-and-swap: the claimer found that
    holder dead); ``Claimed.REFUSED`` (falsy) when another holder has it. ``ttl_ms=None`` never
    expires (used for de-duplication marks). With ``required`` a refused claim stops the batch with
    :class:`LeaseHeld`."""

    key: str
    holder: str
    ttl_ms: int | None
    required: bool = True
    owner: LeaseOwner | None = None
    replace: str | None = None


@dataclass(frozen=True, slots=True)
class ReleaseStep(StepOf[None]):
    """Drop the lease if ``holder`` has it; otherwise do nothing."""

    key: str
    holder: str


@dataclass(frozen=True, slots=True)
class MarkCutStep(StepOf["builtins.list[Record]"]):
    """Mark the conversation's cut turn, if its tail has one: every tool call without a result gets an
    ``error: interrupted`` result and an unanswered user message an ``interrupted`` assistant marker
    (request keys make it idempotent). Answers the created messages, oldest first.

    ``request_key``: the key under which the same batch stores its user message. A user message
    already stored under it is that very message (the batch was repeated after a lost answer, or the
    request redelivered), answered by the turn now opening: it gets no marker. Engines that cannot
    look request keys up (the plain-steps :meth:`Engine.mark_cut`) mark it anyway; an older answer is
    then followed by the turn's new one, which history readers prefer (see agent.prompt.history)."""

    conversation_id: str
    request_key: str | None = None


#: any batch step (the step types are the rows of :data:`STEPS`)
Step = StepOf[object]


def tail_query(conversation_id: str, limit: int) -> ListQuery:
    """The newest ``limit`` messages of a conversation, newest first (what :class:`MarkCutStep` reads)."""
    filters: dict[str, JSON] = {"conversation_id": conversation_id}
    return ListQuery(filters=filters, order_by="seq", descending=True, limit=limit)


@dataclass(frozen=True, slots=True)
class StepRow:
    """One row of the step table: what every engine, and the OSIS wire mapping, know of a step type."""

    #: the step only reads: runs of reads may be sent at once, and need no write transaction
    reads: bool
    #: its OSIS JSON-RPC method; ``{object}`` stands for the kind's object name (``agentmessage``)
    method: str
    #: the capability an engine declares when it runs the step itself (None: every engine does)
    capability: str | None = None


#: THE step table. A new step is one row here, plus its handling in each engine (the embedded
#: engine's ``store.sqlite.batch``, the wire mapping ``store.osis.wire`` and the server's
#: ``store.osis.dispatch``); :func:`check_handlers` refuses a handler table that misses a row.
STEPS: Final[dict[type[Step], StepRow]] = {
    GetStep: StepRow(reads=True, method="{object}.get"),
    ListStep: StepRow(reads=True, method="{object}.list", capability="text_search"),
    CountStep: StepRow(reads=True, method="{object}.count", capability="counts"),
    CreateStep: StepRow(reads=False, method="{object}.set"),
    UpdateStep: StepRow(reads=False, method="{object}.set"),
    DeleteStep: StepRow(reads=False, method="{object}.delete"),
    ClaimStep: StepRow(reads=False, method="agentlease.claim", capability="leases"),
    ReleaseStep: StepRow(reads=False, method="agentlease.release", capability="leases"),
    MarkCutStep: StepRow(reads=False, method="store.mark_interrupted"),
}


def row_of(step: Step) -> StepRow:
    """The step table's row for ``step``'s type."""
    row = STEPS.get(type(step))
    if row is None:
        raise TypeError(f"not a batch step: {step!r}")
    return row


def reads_only(step: Step) -> bool:
    return row_of(step).reads


def leases_only(steps: Sequence[Step]) -> bool:
    """The batch writes nothing but expiring leases: a lost commit of it only means a lease expires by
    time, so an engine may commit it without waiting for the disk (SQLite's fsync, PostgreSQL's WAL
    flush)."""
    return all(
        reads_only(s) or isinstance(s, ReleaseStep) or (isinstance(s, ClaimStep) and s.ttl_ms is not None)
        for s in steps
    )


def check_handlers(handlers: Mapping[type, object], where: str) -> None:
    """Refuse (at import) a handler table that does not handle every step of :data:`STEPS`."""
    missing = sorted(t.__name__ for t in STEPS if t not in handlers)
    if missing:
        raise TypeError(f"{where} does not handle the steps {', '.join(missing)}")


def settled(step: Step, result: object) -> object:
    """``result`` as the step's answer: a refused required claim raises :class:`LeaseHeld`."""
    if isinstance(step, ClaimStep) and step.required and not result:
        raise LeaseHeld(step.key)
    return result


class Results(builtins.list[object]):
    """A batch's results in step order; :meth:`of` gives one step's result, typed by the step."""

    __slots__ = ("_steps",)

    def __init__(self, steps: Sequence[Step], values: Iterable[object]) -> None:
        super().__init__(values)
        self._steps = steps
        if len(self) != len(steps):
            raise ValueError(f"{len(self)} results for {len(steps)} steps")

    def of(self, step: StepOf[R]) -> R:
        """The result of ``step`` (the very object that was in the batch)."""
        for i, s in enumerate(self._steps):
            if s is step:
                # the engine's handler for this step type returned it: its type is the step's R
                return cast(R, self[i])
        raise KeyError(f"not a step of this batch: {step!r}")


#: batches per group commit: the bounds of the histogram in ``/metrics``
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(slots=True)
class CommitStats:
    """Counts of an engine's write transactions (updated by its worker thread, read by ``/metrics``;
    plain ints: a torn read is at worst one behind)."""

    #: transactions committed (a group of batches is one)
    commits: int = 0
    #: commits that waited for the disk (``synchronous=FULL``: the log fsynced)
    fsyncs: int = 0
    #: write batches committed or refused in a group; ``batches / commits`` is the mean group size
    batches: int = 0
    #: groups by size: ``groups[i]`` counts groups of at most ``GROUP_BUCKETS[i]`` batches (and
    #: more than the bound before); the last slot those above every bound
    groups: list[int] = field(default_factory=lambda: [0] * (len(GROUP_BUCKETS) + 1))
    #: write batches answered before their commit (``Engine.batch_early``), and those of them whose
    #: commit then failed (their durability failed: nothing was acknowledged)
    early: int = 0
    early_failed: int = 0
    #: deferred full-text indexing (the embedded engine's messages; off elsewhere): rows indexed, and
    #: the runs that indexed them, while the store's thread was idle or before a search
    deferred_index: bool = False
    #: rows this process wrote and has not indexed yet (an estimate of the pending ones: a batch
    #: rolled back counts too, until an index run finds none left)
    unindexed: int = 0
    indexed_rows: int = 0
    index_runs_idle: int = 0
    index_runs_search: int = 0
    #: the embedded engine: how many times opening the file tried the switch to WAL again while
    #: another process was making it (None: an engine without that switch)
    wal_retries: int | None = None
    #: the embedded engine with its writer in a process of its own: the processes started again
    #: after one ended (None: the writer is a thread of this process)
    writer_restarts: int | None = None

    def indexed(self, rows: int, *, idle: bool, all_done: bool) -> None:
        """An index run indexed ``rows`` rows, and ``all_done``: none is left."""
        self.unindexed = 0 if all_done else max(0, self.unindexed - rows)
        if rows:
            self.indexed_rows += rows
            if idle:
                self.index_runs_idle += 1
            else:
                self.index_runs_search += 1

    def grouped(self, size: int, *, committed: bool, synced: bool) -> None:
        self.batches += size
        self.groups[bisect.bisect_left(GROUP_BUCKETS, size)] += 1
        if committed:
            self.commits += 1
            self.fsyncs += synced


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine does itself. Where one is missing the :class:`~store.api.store.Store` runs a
    documented fallback (docs/store.md, "Capabilities and fallbacks") through the steps it has."""

    #: a batch is ONE transaction (all or nothing); without it the steps run in order and a failure
    #: leaves the earlier ones done (the Store puts required claims first and the lease release last)
    atomic_batch: bool = True
    #: ``ClaimStep``/``ReleaseStep`` (compare-and-set in the engine); fallback: lease records
    leases: bool = True
    #: ``CountStep``; fallback: paging through ``ListStep`` and counting
    counts: bool = True
    #: ``ListQuery.text``; fallback: paging through the records and ranking them by shared words
    text_search: bool = True

    def runs(self, step: Step) -> bool:
        """The engine runs ``step`` itself (else the Store's fallback does)."""
        name = row_of(step).capability
        if name is None:
            return True
        if name == "text_search":
            return not (isinstance(step, ListStep) and step.query.text is not None) or self.text_search
        return bool(getattr(self, name))


class Engine(ABC):
    """A store engine: ONE abstract I/O method, :meth:`batch`; the single-call verbs are derived from
    it. An async context manager; ``open``/``aclose`` are idempotent."""

    name: str = "engine"
    capabilities: Capabilities = Capabilities()

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
    async def batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        """Run ``steps`` in ``scope`` in order; each step's result (what its own verb returns), in order.

        With ``capabilities.atomic_batch`` the batch is ONE transaction (all or nothing, one commit);
        without, the steps before a failure stay done (put required claims first). A refused
        :class:`ClaimStep` with ``required`` raises :class:`~store.errors.LeaseHeld`; any failure
        stops the batch. Reads see the batch's own earlier writes.
        """

    async def batch_early(self, scope: Scope, steps: Sequence[Step]) -> tuple[Results, Durable]:
        """:meth:`batch`, answered as soon as its steps ran: the results, and None when they are
        already durable, else an awaitable that completes once the batch's commit is durable and
        raises :class:`~store.errors.StoreUnavailable` when that commit failed (then nothing the batch
        wrote exists). The results are final either way: the batch holds the write lock from its
        first step to its commit. A caller must not acknowledge anything the batch wrote before the
        awaitable completed. Default: :meth:`batch` (durable when it returns); the embedded engine
        answers before its commit's fsync (a turn builds and sends its request meanwhile)."""
        return await self.batch(scope, steps), None

    async def read(self, scope: Scope, steps: Sequence[Step]) -> Results:
        """Reads (every step ``reads_only``) of what is committed, in one snapshot, that may run beside
        this process's writes: they need not see a write answered early whose commit is still on its
        way (:meth:`batch_early`). Default: :meth:`batch`; the embedded engine runs them on a
        connection of their own, so that they do not queue behind the writes."""
        return await self.batch(scope, steps)

    def backlog(self) -> int:
        """How many of this process's calls a write sent now would queue behind: the embedded
        engine's one writer (its thread, or its writer process) serves them in turn. A turn that
        would wait sends its request before its opening answered (``agent/turn/early.py``). Default
        0: an engine whose calls do not queue in this process (a server's pool, a remote store)."""
        return 0

    async def run(self, scope: Scope, step: StepOf[R]) -> R:
        """One step as its own batch, its result typed by the step."""
        return (await self.batch(scope, [step])).of(step)

    @abstractmethod
    async def get_lease(self, scope: Scope, key: str) -> Lease | None:
        """The lease ``key`` as stored (also when it has lapsed), or None."""

    @abstractmethod
    async def list_leases(self, context: str, prefix: str) -> builtins.list[Lease]:
        """Every lease of the context (all users) whose key starts with ``prefix``, lapsed ones too."""

    @abstractmethod
    async def contexts(self) -> builtins.list[str]:
        """Every context that holds at least one record, sorted."""

    @abstractmethod
    def dump(self, context: str) -> AsyncIterator[tuple[Kind, Record]]:
        """Every record of the context (all users, all kinds), in a stable order:
        kinds in ``Kind`` order, then by sid; messages after their conversations."""

    @abstractmethod
    async def restore_batch(self, items: Sequence[tuple[Kind, Record]]) -> int:
        """Write dumped records as they are (sid, scope, timestamps, seq kept); how many were written.

        Idempotent: an identical record already present is left alone (not counted). A message whose
        conversation is missing is refused with InvalidInput. Engines write a batch atomically where
        they can (all or nothing).
        """

    async def restore(self, kind: Kind, record: Record) -> bool:
        """One dumped record (see :meth:`restore_batch`); False when an identical one was present."""
        return await self.restore_batch([(kind, record)]) == 1

    async def ping(self) -> None:
        """Raise StoreUnavailable when the engine cannot serve requests."""
        return None

    async def rename_user(self, context: str, old: str, new: str, *, merge: bool = False) -> dict[str, int]:
        """Move every record of user ``old`` in ``context`` to user ``new``, atomically; how many
        records of each kind moved (``"dropped"``: ``old``'s records that clashed with ``new``'s).

        Sids stay (they are unique per context), so conversations keep their messages. Raises
        :class:`~store.errors.Conflict` when ``new`` already holds records there and ``merge`` is
        false. With ``merge`` the target's records win each clash (a state key, a memory hash).
        An optional capability: an engine that cannot do this atomically says so.
        """
        raise UnsupportedOperation(f"the {self.name} store engine cannot move records between users")

    def counters(self) -> dict[str, int]:
        """Event counts for ``/metrics`` (a remote engine's failed attempts...); none by default."""
        return {}

    def commit_stats(self) -> CommitStats | None:
        """The write transactions of an engine that commits them itself (the embedded one), for
        ``/metrics``; None for an engine that does not (a remote engine's server counts its own)."""
        return None

    def gauges(self) -> dict[str, int]:
        """Current values for ``/metrics`` (a pool's open and lent connections); none by default."""
        return {}

    async def mark_cut(self, scope: Scope, conversation_id: str) -> builtins.list[Record]:
        """:class:`MarkCutStep` made of plain steps, for an engine that cannot run it itself (the
        embedded engine runs it inside its batch's transaction)."""
        head = await self.run(scope, ListStep(Kind.MESSAGE, tail_query(conversation_id, 1)))
        if cut_turns.settled(head.items):
            return []
        tail = await self.run(scope, ListStep(Kind.MESSAGE, tail_query(conversation_id, cut_turns.TAIL)))
        return [
            await self.run(scope, CreateStep(Kind.MESSAGE, fields, key))
            for fields, key in cut_turns.markers(conversation_id, tail.items)
        ]

    # -- the single-call verbs, each one step ----------------------------------------------------

    async def get(self, kind: Kind, scope: Scope, sid: str) -> Record | None:
        return await self.run(scope, GetStep(kind, sid))

    async def create(
        self, kind: Kind, scope: Scope, fields: Record, *, request_key: str | None = None
    ) -> Record:
        return await self.run(scope, CreateStep(kind, fields, request_key))

    async def update(self, kind: Kind, scope: Scope, sid: str, fields: Record) -> Record | None:
        return await self.run(scope, UpdateStep(kind, sid, fields))

    async def delete(self, kind: Kind, scope: Scope, sid: str) -> bool:
        return await self.run(scope, DeleteStep(kind, sid))

    async def list(self, kind: Kind, scope: Scope, query: ListQuery) -> Page[Record]:
        return await self.run(scope, ListStep(kind, query))

    async def count(self, kind: Kind, scope: Scope, filters: dict[str, JSON] | None = None) -> int:
        return await self.run(scope, CountStep(kind, filters))

    async def claim(
        self,
        scope: Scope,
        key: str,
        holder: str,
        ttl_ms: int | None,
        *,
        owner: LeaseOwner | None = None,
        replace: str | None = None,
    ) -> Claimed:
        step = ClaimStep(key, holder, ttl_ms, required=False, owner=owner, replace=replace)
        return await self.run(scope, step)

    async def release(self, scope: Scope, key: str, holder: str) -> None:
        await self.run(scope, ReleaseStep(key, holder))


class DelegatingEngine(Engine):
    """An engine that hands every call to ``inner``: the base of engines that wrap another (the Store's
    fallbacks, a timing wrapper); a subclass overrides what it changes, usually :meth:`batch`."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities

    async def open(self) -> None:
        await self.inner.open()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def ping(self) -> None:
        await self.inner.ping()

    async def batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        return await self.inner.batch(scope, steps)

    async def batch_early(self, scope: Scope, steps: Sequence[Step]) -> tuple[Results, Durable]:
        """The inner engine's, unless this wrapper changes :meth:`batch` (then through it: durable
        when answered)."""
        if type(self).batch is DelegatingEngine.batch:
            return await self.inner.batch_early(scope, steps)
        return await self.batch(scope, steps), None

    async def read(self, scope: Scope, steps: Sequence[Step]) -> Results:
        """The inner engine's, unless this wrapper changes :meth:`batch` (then through it)."""
        if type(self).batch is DelegatingEngine.batch:
            return await self.inner.read(scope, steps)
        return await self.batch(scope, steps)

    def backlog(self) -> int:
        return self.inner.backlog()

    async def contexts(self) -> builtins.list[str]:
        return await self.inner.contexts()

    async def dump(self, context: str) -> AsyncIterator[tuple[Kind, Record]]:
        async for item in self.inner.dump(context):
            yield item

    async def restore_batch(self, items: Sequence[tuple[Kind, Record]]) -> int:
        return await self.inner.restore_batch(items)

    async def get_lease(self, scope: Scope, key: str) -> Lease | None:
        return await self.inner.get_lease(scope, key)

    async def list_leases(self, context: str, prefix: str) -> builtins.list[Lease]:
        return await self.inner.list_leases(context, prefix)

    async def rename_user(self, context: str, old: str, new: str, *, merge: bool = False) -> dict[str, int]:
        return await self.inner.rename_user(context, old, new, merge=merge)

    def counters(self) -> dict[str, int]:
        return self.inner.counters()

    def commit_stats(self) -> CommitStats | None:
        return self.inner.commit_stats()

    def gauges(self) -> dict[str, int]:
        return self.inner.gauges()
