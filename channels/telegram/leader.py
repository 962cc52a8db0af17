"""One poller per bot across every daemon sharing the store: a leader lease.

Telegram allows one ``getUpdates`` at a time per bot: a second one terminates the first with 409
Conflict. With several daemons on one store (web replicas that also run the bot) exactly one polls;
the others wait in ``standby`` (reported in ``/readyz``, not a failure) and take over when it dies.

The lease is ``telegram-poller:<bot id>`` in the reserved context ``_system``, user ``telegram``: the
store's short expiring lease (:data:`~store.LEASE_S`, 5 s), renewed every third of it by the leader.
A standby daemon claims it every :data:`STANDBY_RETRY_S`: it gets it when the leader released it (a
clean stop), when it lapsed (the leader died on another host: at most 5 s), or at once when the
leader was a dead process of this host (compare-and-swap take-over, see docs/reliability.md).

Never two pollers: a leader that cannot renew (the store unreachable) stops polling once half the
lease has passed since its last renewal, well before anyone else may take it, and claims it again
like a standby daemon. A clean stop stops polling first and releases the lease after, so the next
leader's first ``getUpdates`` never overlaps the last one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import structlog

from agent.metrics import TurnMetrics
from store import LEASE_S, SYSTEM_CONTEXT, Claimed, Scope, Store, StoreError

log = structlog.get_logger("channels.telegram")

#: a standby daemon claims the leader lease this often
STANDBY_RETRY_S = 1.0
#: the leader renews this often
RENEW_S = LEASE_S / 3
#: a leader whose last renewal is this old stops polling (the lease may lapse at LEASE_S)
GIVE_UP_S = LEASE_S / 2
LEADER_SCOPE = Scope(SYSTEM_CONTEXT, "telegram")
LEADER_EVENTS = "hero_telegram_leader_events_total"
LEADER_EVENTS_HELP = (
    "The polling leader lease: acquired (this daemon started polling), takeover (acquired from a "
    "holder that died or lapsed), lost (stopped polling: the lease could not be renewed), released."
)


class PollingLeader:
    """Holds the leader lease and polls while it does; see the module docstring."""

    def __init__(
        self,
        store: Store,
        bot_id: int,
        metrics: TurnMetrics,
        *,
        start_polling: Callable[[], Awaitable[None]],
        stop_polling: Callable[[], Awaitable[None]],
    ) -> None:
        self._store = store
        self._key = f"telegram-poller:{bot_id}"
        self._metrics = metrics
        self._start_polling = start_polling
        self._stop_polling = stop_polling
        self._last_renewal: float | None = None
        self.polling = False
        metrics.counters.declare(LEADER_EVENTS, LEADER_EVENTS_HELP)
        self._set_state("standby")

    def _set_state(self, state: str) -> None:
        self._metrics.channel_states["telegram"] = state

    async def step(self) -> None:
        """One claim: start polling when the lease became ours, stop when it can no longer be."""
        try:
            outcome = await self._store.leases.claim(LEADER_SCOPE, self._key, ttl_s=LEASE_S)
        except StoreError as exc:
            log.warning("telegram.leader_claim_failed", error=type(exc).__name__)
            if self.polling and anyio.current_time() - (self._last_renewal or 0) > GIVE_UP_S:
                await self._give_up("store_unreachable")
            return
        if not outcome:
            if self.polling:  # another daemon has it: ours lapsed while we could not renew
                await self._give_up("taken")
            return
        self._last_renewal = anyio.current_time()
        if not self.polling:
            if outcome in (Claimed.LAPSED, Claimed.REPLACED):
                self._metrics.counters.inc(LEADER_EVENTS, event="takeover")
            self._metrics.counters.inc(LEADER_EVENTS, event="acquired")
            log.info("telegram.leader_acquired", how=str(outcome))
            await self._start_polling()
            self.polling = True
            self._set_state("polling")

    async def _give_up(self, reason: str) -> None:
        log.warning("telegram.leader_lost", reason=reason)
        self._metrics.counters.inc(LEADER_EVENTS, event="lost")
        self.polling = False
        self._set_state("standby")
        await self._stop_polling()

    async def run(self) -> None:
        """Claim or renew until cancelled."""
        while True:
            await anyio.sleep(RENEW_S if self.polling else STANDBY_RETRY_S)
            try:
                await self.step()
            except Exception as exc:  # starting to poll failed (Bot API down): the next step retries
                log.warning("telegram.leader_start_failed", error=type(exc).__name__)

    async def release(self) -> None:
        """After polling stopped (the channel's stop): let the next daemon take over at once."""
        if self._last_renewal is None:
            return  # never held it
        self.polling = False
        self._set_state("standby")
        try:
            await self._store.leases.release(LEADER_SCOPE, self._key)
        except StoreError as exc:  # it lapses by itself within LEASE_S
            log.warning("telegram.leader_release_failed", error=type(exc).__name__)
            return
        self._metrics.counters.inc(LEADER_EVENTS, event="released")
