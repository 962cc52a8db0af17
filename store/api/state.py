"""Per-scope key/value state and leases (turn locks across processes, de-duplication marks)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import structlog

from store.api.base import StoreBase, store_fields
from store.engine import ClaimStep, ListQuery, ReleaseStep, Step
from store.errors import Conflict, LeaseHeld, StoreError
from store.models import Kind, Scope, StateEntry

T = TypeVar("T")
log = structlog.get_logger()


class StateMixin(StoreBase):
    async def get_state(self, scope: Scope, key: str) -> str | None:
        page = await self.engine.list(Kind.STATE, scope, ListQuery(filters={"key": key}, limit=1))
        return StateEntry.from_record(page.items[0]).value if page.items else None

    async def set_state(self, scope: Scope, key: str, value: str) -> None:
        page = await self.engine.list(Kind.STATE, scope, ListQuery(filters={"key": key}, limit=1))
        if page.items:
            await self.engine.update(Kind.STATE, scope, page.items[0]["sid"], {"value": value})
        else:
            rec = StateEntry(key=key, value=value).to_record()
            await self.engine.create(Kind.STATE, scope, store_fields(rec), request_key=f"state:{key}")
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

    async def try_lease(self, scope: Scope, key: str, *, ttl_s: float) -> bool:
        """Take the expiring lease ``key`` for this Store (renewing it when already ours); False when
        another Store, in this process or another, holds it and it has not expired."""
        return await self.engine.claim(scope, f"lease:{key}", self._holder, int(ttl_s * 1000))

    async def release_lease(self, scope: Scope, key: str) -> None:
        """Drop the lease ``key`` if this Store holds it."""
        await self.engine.release(scope, f"lease:{key}", self._holder)

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

        async def take(claim: ClaimStep) -> None:
            await self.engine.batch(scope, [claim])

        async with self._turn_lease(scope, conversation_id, take, ttl_s=ttl_s, wait_s=wait_s):
            yield

    @asynccontextmanager
    async def _turn_lease(
        self,
        scope: Scope,
        conversation_id: str,
        take: Callable[[ClaimStep], Awaitable[T]],
        *,
        ttl_s: float,
        wait_s: float,
        closing: Callable[[T], list[Step]] | None = None,
    ) -> AsyncIterator[T]:
        """The conversation's turn lease, taken by ``take(claim)`` (a batch with ``claim`` first, which
        raises LeaseHeld while someone else holds it: retried with backoff up to ``wait_s``); yields
        what ``take`` answered and releases the lease on exit, in one batch with the steps
        ``closing(answer)`` gives then (best effort: when they fail, the lease is still released)."""
        key = (scope.context, scope.user_id, conversation_id)
        lock = self._local_locks.setdefault(key, anyio.Lock())
        # one holder per Store: the local lock already serializes this process, and a lease left
        # behind when the release failed (store briefly down) is then retaken at once, not after ttl_s
        claim = ClaimStep(f"turn:{conversation_id}", self._holder, int(ttl_s * 1000))
        async with lock:
            delay = 0.005
            deadline = anyio.current_time() + wait_s
            while True:
                try:
                    taken = await take(claim)
                    break
                except LeaseHeld:
                    if anyio.current_time() > deadline:
                        raise Conflict("the conversation is busy with another turn") from None
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 0.1)
                except BaseException:
                    # an engine without atomic batches may have taken the lease before failing
                    with anyio.CancelScope(shield=True), contextlib.suppress(StoreError):
                        await self._drop(scope, claim)
                    raise
            try:
                yield taken
            finally:
                with anyio.CancelScope(shield=True):
                    await self._close(scope, claim, closing(taken) if closing is not None else [])

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
