"""The holder's side of a ``/stop`` sent to another process (see ``store.api.stops``).

While a turn holds its conversation, :func:`watch_for_stop` looks in the store for a stop request
aimed at it, at least every :data:`~store.STOP_CHECK_S`, and cancels the turn when it finds one: the
turn then ends exactly like after a local ``/stop`` (partial reply stored ``interrupted``, a
``cancelled`` turn event). The first look is one check period after the turn took its lock, made by
a task a timer starts then, so a turn shorter than that costs the store nothing and starts no task.
"""

from __future__ import annotations

import asyncio

import anyio
import structlog
from anyio.abc import TaskGroup

from store import STOP_CHECK_S, Scope, Store, StoreError

log = structlog.get_logger()


def watch_for_stop(
    tg: TaskGroup,
    store: Store,
    scope: Scope,
    conversation_id: str,
    *,
    cancel_scope: anyio.CancelScope,
    done: anyio.Event,
) -> asyncio.TimerHandle:
    """Watch a turn that just took its lock: until ``done`` is set, every :data:`STOP_CHECK_S`, cancel
    ``cancel_scope`` when a stop request for this process's turn of ``conversation_id`` is in the
    store (a store error skips one look). The first look is one period later, made by a task the
    returned timer starts in ``tg`` then: cancel the timer when the turn ends (a turn shorter than a
    period starts no task at all)."""
    locked_at = anyio.current_time()

    async def watch() -> None:
        while not done.is_set():
            try:
                # +STOP_CHECK_S: the lease was claimed a round trip before the lock was reported taken
                running_s = anyio.current_time() - locked_at + STOP_CHECK_S
                if await store.stops.requested(scope, conversation_id, running_s=running_s):
                    cancel_scope.cancel()
                    return
            except StoreError as exc:
                log.warning("turn.stop_check_failed", conversation=conversation_id, error=type(exc).__name__)
            with anyio.move_on_after(STOP_CHECK_S):
                await done.wait()

    def start() -> None:
        if not done.is_set():
            tg.start_soon(watch)

    return asyncio.get_running_loop().call_later(STOP_CHECK_S, start)
