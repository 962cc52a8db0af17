"""Per-scope key/value state and leases (turn locks across processes, de-duplication marks)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from store.api_base import StoreBase, store_fields
from store.engine import ListQuery
from store.errors import Conflict
from store.models import Kind, Scope, StateEntry


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
