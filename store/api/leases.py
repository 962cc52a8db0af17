"""Leases of the store API (``store.leases``): turn locks across processes, Telegram update locks,
de-duplication marks, and the marks of the turns a dead process left cut.

A held lease is short (:data:`~store.leases.LEASE_S`) and renewed by a background task once a third of
it has passed, for as long as its holder runs (up to ``max_hold_s``, ``agent.turn_lock_ttl_s``): a turn
shorter than that writes nothing beyond its claim and release, a live holder is never robbed, and a
dead one lets go at most ``LEASE_S`` after its last renewal. A claimer that finds the lease held by a
process of its own host that no longer exists takes it over at once (:func:`~store.leases.known_dead`,
then a compare-and-swap claim with ``replace``). See docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import anyio.lowlevel
import structlog

from store.engine import ClaimStep, Engine, MarkCutStep, ReleaseStep, Results, Step
from store.errors import ConversationBusy, LeaseHeld, LeaseLost, StoreError
from store.leases import (
    LEASE_S,
    RENEW_FRACTION,
    Claimed,
    KeyedLocks,
    LeaseStats,
    known_dead,
    this_host,
    this_process,
)
from store.models import Scope

T = TypeVar("T")
log = structlog.get_logger()

#: the key prefix of conversation turn locks
TURN_PREFIX = "turn:"


@dataclass(eq=False)
class HeldLease:
    """A turn lease while its block runs: its renewal can be stopped and the lease released together
    with the turn's last writes (:meth:`release_with`), so a turn's end is one commit, not two."""

    scope: Scope
    claim: ClaimStep
    #: set to stop the renewal task (perhaps before it has started), and set by it when it has ended.
    #: An event, not a cancel: anyio formats the calling task's repr into every cancel's reason
    #: (~40 us at a turn's stack depth), and a turn ends its renewal on every short turn
    renewal_stop: anyio.Event = field(default_factory=anyio.Event)
    renewal_ended: anyio.Event = field(default_factory=anyio.Event)
    #: the timer that starts the renewal task a third of the lease in, and that task once started:
    #: a turn shorter than that starts no task at all (a task per turn cost ~40 us of a short turn)
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    #: :meth:`release_with` sent its batch: the exit releases the lease only, never writes the closing
    #: steps (they went in that batch, or failed with it)
    finishing: bool = False
    released: bool = False
    _called: bool = False

    def stop_renewal(self) -> None:
        """Stop the renewal: a started task ends at its next wake-up (``renewal_ended`` then), one
        not started yet never starts."""
        self.renewal_stop.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._task is None:
            self.renewal_ended.set()

    async def release_with(self, engine: Engine, steps: Sequence[Step]) -> Results:
        """Run ``steps`` and the lease's release in ONE batch (with atomic batches: one transaction),
        after the renewal has stopped (a renewal landing after the release would take it again)."""
        if self._called:
            raise RuntimeError("the turn lease was already released")
        self._called = True
        self.stop_renewal()
        if self.renewal_ended.is_set():  # no renewal task ran (most turns): no trip through the loop
            await anyio.lowlevel.checkpoint_if_cancelled()
        else:
            await self.renewal_ended.wait()
        release = ReleaseStep(self.claim.key, self.claim.holder)
        self.finishing = True  # from here on, whatever happens, the steps are not written again
        results = await engine.batch(self.scope, [*steps, release])
        self.released = True
        return results


class Leases:
    """The leases one Store takes, all under one holder name (this Store in this process), with their
    counters. The turns and the stop requests build on it (``store.turns``, ``store.stops``)."""

    def __init__(self, engine: Engine, *, lease_s: float = LEASE_S) -> None:
        self.engine = engine
        #: how long a held turn lock outlives its holder's last renewal (tests shorten it)
        self.lease_s = lease_s
        #: the name this Store claims under (a stop request names it: ``store.stops``)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: this process, recorded with every lease it takes (see store.leases)
        self.owner = this_process()
        #: one lock per conversation with a turn running or waiting in this process
        self._local_locks = KeyedLocks()
        #: lease and cut-turn counters, shown in /metrics
        self.stats = LeaseStats()

    def lease_ms(self, max_hold_s: float) -> int:
        """The lease of a holder that keeps it at most ``max_hold_s``: short (``lease_s``, at most
        :data:`~store.leases.LEASE_S` by default), never longer than that."""
        return max(1, int(min(self.lease_s, max_hold_s) * 1000))

    # -- single claims -------------------------------------------------------------------------

    async def try_claim(self, scope: Scope, key: str, *, ttl_s: float) -> bool:
        """Take the expiring lease ``key`` for this Store (renewing it when already ours); False when
        another live holder has it. A dead holder of this host is taken over at once."""
        return bool(await self.claim(scope, key, ttl_s=ttl_s))

    async def claim(self, scope: Scope, key: str, *, ttl_s: float) -> Claimed:
        """:meth:`try_claim`, answering how the claim went: ``REFUSED`` (falsy) while another live
        holder has it, ``LAPSED``/``REPLACED`` when taken from another holder (a leader's take-over)."""
        claim = ClaimStep(f"lease:{key}", self.holder, int(ttl_s * 1000), owner=self.owner)
        return await self._claim(scope, claim)

    async def release(self, scope: Scope, key: str) -> None:
        """Drop the lease ``key`` if this Store holds it."""
        await self.engine.release(scope, f"lease:{key}", self.holder)

    async def claim_once(self, scope: Scope, key: str) -> bool:
        """True the first time ``key`` is claimed in this scope, by anyone, ever (de-duplication)."""
        # a fresh holder per call: a holder re-claiming its own lease succeeds (renewal), which would
        # make every call look like the first
        holder = f"{self.holder}:{uuid.uuid4().hex}"
        return bool(await self.engine.claim(scope, f"once:{key}", holder, None))

    async def _claim(self, scope: Scope, claim: ClaimStep) -> Claimed:
        outcome = await self.engine.claim(
            scope, claim.key, claim.holder, claim.ttl_ms, owner=claim.owner, replace=claim.replace
        )
        if not outcome:
            dead = await self._dead_holder(scope, claim.key)
            if dead is None:
                return Claimed.REFUSED
            outcome = await self.engine.claim(
                scope, claim.key, claim.holder, claim.ttl_ms, owner=claim.owner, replace=dead
            )
        self._count_claim(outcome, claim.key)
        return Claimed(outcome)

    async def _dead_holder(self, scope: Scope, key: str) -> str | None:
        """The holder of ``key`` when it is a process of this host that is gone, else None."""
        lease = await self.engine.get_lease(scope, key)
        if lease is None or lease.holder == self.holder or not known_dead(lease.owner):
            return None
        return lease.holder

    def _count_claim(self, outcome: object, key: str) -> None:
        if outcome in (Claimed.REPLACED, Claimed.LAPSED):
            log.info("store.lease_taken_over", key=key, reason=str(outcome))
        self.stats.claimed(str(outcome))

    # -- held leases ---------------------------------------------------------------------------

    @asynccontextmanager
    async def keep(self, scope: Scope, key: str, *, max_hold_s: float) -> AsyncIterator[None]:
        """Renew the lease ``key`` (taken with :meth:`try_claim` and a ``ttl_s`` of at most
        :data:`~store.leases.LEASE_S`) while the block runs, for at most ``max_hold_s``; raises
        LeaseLost when it lapsed and another holder took it."""
        claim = ClaimStep(f"lease:{key}", self.holder, self.lease_ms(max_hold_s), owner=self.owner)
        async with self._renewing(scope, claim, max_hold_s, HeldLease(scope, claim)):
            yield

    @asynccontextmanager
    async def conversation_lock(
        self, scope: Scope, conversation_id: str, *, ttl_s: float = 600.0, wait_s: float = 600.0
    ) -> AsyncIterator[None]:
        """Serialize turns of one conversation, in this process and across processes.

        Waits up to ``wait_s`` (then raises Conflict); the lock is kept (renewed) for at most
        ``ttl_s``, and a crashed holder lets go within :data:`~store.leases.LEASE_S`.
        """

        async def take(claim: ClaimStep) -> tuple[object, None]:
            (outcome,) = await self.engine.batch(scope, [claim])
            return outcome, None

        async with self.turn_lease(scope, conversation_id, take, ttl_s=ttl_s, wait_s=wait_s):
            yield

    @asynccontextmanager
    async def turn_lease(
        self,
        scope: Scope,
        conversation_id: str,
        take: Callable[[ClaimStep], Awaitable[tuple[object, T]]],
        *,
        ttl_s: float,
        wait_s: float,
        closing: Callable[[T], list[Step]] | None = None,
    ) -> AsyncIterator[tuple[T, HeldLease]]:
        """The conversation's turn lease, taken by ``take(claim)`` (a batch with ``claim`` first, which
        raises LeaseHeld while someone else holds it: a dead holder of this host is replaced at once,
        others are waited for with backoff up to ``wait_s``); ``take`` answers the claim's outcome and
        its value. Yields that value with the lease renewed in the background, and releases the lease
        on exit, in one batch with the steps ``closing(value)`` gives then (best effort: when they
        fail, the lease is still released) -- unless the block released it itself with
        :meth:`HeldLease.release_with`. Yields the value with the :class:`HeldLease`."""
        key = (scope.context, scope.user_id, conversation_id)
        # one holder per Store: the local lock already serializes this process, and a lease left
        # behind when the release failed (store briefly down) is then retaken at once
        claim = ClaimStep(
            f"{TURN_PREFIX}{conversation_id}", self.holder, self.lease_ms(ttl_s), owner=self.owner
        )
        async with self._local_locks.hold(key):
            outcome, taken = await self._take(scope, claim, take, wait_s)
            self._count_claim(outcome, claim.key)
            held = HeldLease(scope, claim)
            try:
                async with self._renewing(scope, claim, ttl_s, held):
                    yield taken, held
            finally:
                if not held.released:
                    steps = closing(taken) if closing is not None and not held.finishing else []
                    with anyio.CancelScope(shield=True):
                        await self._close(scope, claim, steps)

    async def _take(
        self,
        scope: Scope,
        claim: ClaimStep,
        take: Callable[[ClaimStep], Awaitable[tuple[object, T]]],
        wait_s: float,
    ) -> tuple[object, T]:
        delay = 0.005
        deadline = anyio.current_time() + wait_s
        attempt = claim
        while True:
            try:
                return await take(attempt)
            except LeaseHeld:
                dead = await self._dead_holder(scope, claim.key)
                if dead is not None and attempt.replace != dead:
                    attempt = dataclasses.replace(claim, replace=dead)
                    continue  # at once: the holder is known to be gone
                attempt = claim
                if anyio.current_time() > deadline:
                    raise ConversationBusy() from None
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.1)
            except BaseException:
                # an engine without atomic batches may have taken the lease before failing
                with anyio.CancelScope(shield=True), contextlib.suppress(StoreError):
                    await self._drop(scope, claim)
                raise

    @asynccontextmanager
    async def _renewing(
        self, scope: Scope, claim: ClaimStep, max_hold_s: float, held: HeldLease
    ) -> AsyncIterator[None]:
        """Renew ``claim``'s lease while the block runs: first after a third of the lease, then every
        third, for at most ``max_hold_s``. A failed renewal (store unreachable) is retried at the next
        one; a refused one (the lease lapsed meanwhile and another holder took it) cancels the block
        and raises :class:`LeaseLost`.

        The renewal is a task started by a timer at its first renewal, so a turn shorter than a third
        of the lease starts none (most turns). The block waits for a started task to end before it
        exits (a renewal in flight finishes first), as a task group would."""
        assert claim.ttl_ms is not None
        period = claim.ttl_ms / 1000 * RENEW_FRACTION
        until = anyio.current_time() + max_hold_s
        block = anyio.CancelScope()
        lost = False

        async def renewing() -> None:
            nonlocal lost
            try:
                while anyio.current_time() + period < until:
                    try:
                        outcome = await self.engine.claim(
                            scope, claim.key, claim.holder, claim.ttl_ms, owner=claim.owner
                        )
                    except StoreError as exc:
                        log.warning("store.lease_renewal_failed", key=claim.key, error=type(exc).__name__)
                        outcome = None
                    if held.renewal_stop.is_set():
                        return  # stopped while the claim ran: its outcome no longer matters
                    if outcome is not None and not outcome:
                        lost = True
                        self.stats.lost += 1
                        log.error("store.lease_lost", key=claim.key)
                        block.cancel()
                        return
                    if outcome is not None:
                        self.stats.renewals += 1
                    with anyio.move_on_after(period):
                        await held.renewal_stop.wait()
                    if held.renewal_stop.is_set():
                        return
                log.warning("store.lease_held_too_long", key=claim.key, max_hold_s=max_hold_s)
            finally:
                held.renewal_ended.set()

        loop = asyncio.get_running_loop()

        def start() -> None:
            held._timer = None
            if not held.renewal_stop.is_set():
                held._task = loop.create_task(renewing())

        if anyio.current_time() + period < until:
            held._timer = loop.call_later(period, start)
        else:  # held for less than one period: nothing to renew
            held.renewal_ended.set()
        try:
            with block:
                yield
        finally:
            held.stop_renewal()
            task = held._task
            if task is not None:
                with anyio.CancelScope(shield=True):
                    await held.renewal_ended.wait()
                if not task.cancelled() and (error := task.exception()) is not None:
                    raise error
        if lost:
            raise LeaseLost(claim.key)

    async def _close(self, scope: Scope, claim: ClaimStep, steps: list[Step]) -> None:
        if steps:
            try:
                await self.engine.batch(scope, [*steps, ReleaseStep(claim.key, claim.holder)])
                return
            except StoreError as exc:
                log.warning("store.closing_steps_failed", steps=len(steps), error=str(exc))
        await self._drop(scope, claim)

    async def _drop(self, scope: Scope, claim: ClaimStep) -> None:
        await self.engine.release(scope, claim.key, claim.holder)

    # -- recovery ------------------------------------------------------------------------------

    async def mark_dead_holders_turns(self) -> int:
        """At daemon start: every conversation whose turn lease a process of this host held and died
        with gets its cut turn marked (under the lease, taken over, then released). Returns how many
        conversations were looked at; a conversation a live process holds is left to it."""
        if this_host() is None:
            return 0
        done = 0
        for context in await self.engine.contexts():
            for lease in await self.engine.list_leases(context, TURN_PREFIX):
                if not known_dead(lease.owner):
                    continue
                scope = Scope(context, lease.user_id)
                claim = ClaimStep(
                    lease.key,
                    self.holder,
                    self.lease_ms(self.lease_s),
                    owner=self.owner,
                    replace=lease.holder,
                )
                mark = MarkCutStep(lease.key.removeprefix(TURN_PREFIX))
                try:
                    outcome, created, _ = await self.engine.batch(
                        scope, [claim, mark, ReleaseStep(claim.key, claim.holder)]
                    )
                except LeaseHeld:
                    continue  # a live process took it meanwhile: its turn marks the conversation
                except StoreError as exc:
                    log.warning("store.recovery_failed", key=lease.key, error=type(exc).__name__)
                    with anyio.CancelScope(shield=True), contextlib.suppress(StoreError):
                        await self._drop(scope, claim)
                    continue
                self._count_claim(outcome, claim.key)
                self.stats.marked(created)
                done += 1
        return done
