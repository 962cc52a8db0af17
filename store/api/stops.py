"""``/stop`` across processes: a stop request written against the running turn's lease.

A turn runs in the process holding its conversation's turn lease (``turn:<conversation>``). A
``/stop`` that lands in another process (another web replica, a Telegram daemon, a CLI) cannot cancel
it directly, so it writes a **stop request**: a short lease ``stop:<conversation>`` whose holder names
the turn's holder (``<turn holder>|<random>``), kept :data:`STOP_TTL_S`. The holding process reads it
at least every :data:`STOP_CHECK_S` while the turn runs (``store.stops.requested``, called by the
agent's per-turn watcher) and cancels the turn exactly as a local ``/stop`` would. A turn shorter
than :data:`STOP_CHECK_S` reads nothing and writes nothing extra.

A request is a lease, which every engine already stores (the embedded ``leases`` table, the postgres
``leases`` table, OSIS ``agentlease.*``): no new field or object, and like every lease it is not user
data (export/import skip leases). Stale requests cannot stop a later turn: a request names the holder
it was aimed at and is honoured only when it is younger than the turn that reads it, the requester
withdraws it once the turn ended, and it lapses after :data:`STOP_TTL_S` anyway.
"""

from __future__ import annotations

import uuid

import anyio
import structlog

from store.api.leases import TURN_PREFIX, Leases
from store.engine import Engine
from store.models import Scope

log = structlog.get_logger()

#: the key prefix of stop requests
STOP_PREFIX = "stop:"
#: a stop request lapses after this long (the holder reads it well before)
STOP_TTL_S = 10.0
#: a running turn's holder looks for a stop request at least this often
STOP_CHECK_S = 1.0
#: how often a requester looks whether the stopped turn has ended
_POLL_S = 0.05


class Stops:
    """Stop requests between processes, written and read against the turn leases of ``leases``."""

    def __init__(self, engine: Engine, leases: Leases) -> None:
        self.engine = engine
        self.leases = leases

    async def request(self, scope: Scope, conversation_id: str, *, wait_s: float = 10.0) -> bool:
        """Stop the conversation's turn when ANOTHER process runs it: write a stop request against its
        lease, wait (up to ``wait_s``) until that turn let go of the lease, then withdraw the request.
        False when no other process holds the conversation (nothing was written)."""
        key = TURN_PREFIX + conversation_id
        lease = await self.engine.get_lease(scope, key)
        if lease is None or lease.lapsed or lease.holder == self.leases.holder:
            return False
        stop_key = STOP_PREFIX + conversation_id
        holder = f"{STOP_PREFIX}{lease.holder}|{uuid.uuid4().hex[:8]}"
        ttl_ms = int(STOP_TTL_S * 1000)
        if not await self.engine.claim(scope, stop_key, holder, ttl_ms):
            # an earlier request is still there (aimed at a turn that ended before seeing it, or at
            # this very turn): replace it, compare-and-swap, so this one names the turn running now
            older = await self.engine.get_lease(scope, stop_key)
            replace = older.holder if older is not None else None
            if not await self.engine.claim(scope, stop_key, holder, ttl_ms, replace=replace):
                log.info("store.stop_request_pending", conversation=conversation_id)
                return True  # another request, written this instant, stops the same turn
        self.leases.stats.stops_written += 1
        log.info("store.stop_requested", conversation=conversation_id, holder=lease.holder)
        try:
            with anyio.move_on_after(wait_s):
                while True:
                    now = await self.engine.get_lease(scope, key)
                    if now is None or now.lapsed or now.holder != lease.holder:
                        break
                    await anyio.sleep(_POLL_S)
        finally:
            with anyio.CancelScope(shield=True):
                await self.engine.release(scope, stop_key, holder)
        return True

    async def requested(self, scope: Scope, conversation_id: str, *, running_s: float) -> bool:
        """True when a stop request names this process's turn of the conversation, which has held its
        lease for ``running_s`` seconds (a request older than that was aimed at an earlier turn). The
        request is consumed (released) when found."""
        stop_key = STOP_PREFIX + conversation_id
        lease = await self.engine.get_lease(scope, stop_key)
        if lease is None or lease.lapsed or lease.expires_in_ms is None:
            return False
        if not lease.holder.startswith(f"{STOP_PREFIX}{self.leases.holder}|"):
            return False
        age_s = STOP_TTL_S - lease.expires_in_ms / 1000
        if age_s > running_s:
            return False
        self.leases.stats.stops_seen += 1
        await self.engine.release(scope, stop_key, lease.holder)
        log.info("store.stop_seen", conversation=conversation_id)
        return True
