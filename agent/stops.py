"""The holder's side of a ``/stop`` sent to another process (see ``store.api.stops``).

While a turn holds its conversation, :func:`watch_for_stop` looks in the store for a stop request
aimed at it, at least every :data:`~store.STOP_CHECK_S`, and cancels the turn when it finds one: the
turn then ends exactly like after a local ``/stop`` (partial reply stored ``interrupted``, a
``cancelled`` turn event). The first look is one check period after the turn took its lock, so a
turn shorter than that costs the store nothing.
"""

from __future__ import annotations

import anyio
import structlog

from store import STOP_CHECK_S, Scope, Store, StoreError

log = structlog.get_logger()


async def watch_for_stop(
    store: Store, scope: Scope, conversation_id: str, cancel_scope: anyio.CancelScope, done: anyio.Event
) -> None:
    """Until ``done`` is set: every :data:`STOP_CHECK_S`, cancel ``cancel_scope`` when a stop request
    for this process's turn of ``conversation_id`` is in the store. A store error skips one look."""
    locked_at = anyio.current_time()
    while True:
        with anyio.move_on_after(STOP_CHECK_S):
            await done.wait()
            return
        try:
            # +STOP_CHECK_S: the lease was claimed a round trip before the lock was reported taken
            running_s = anyio.current_time() - locked_at + STOP_CHECK_S
            if await store.stops.requested(scope, conversation_id, running_s=running_s):
                cancel_scope.cancel()
                return
        except StoreError as exc:
            log.warning("turn.stop_check_failed", conversation=conversation_id, error=type(exc).__name__)
