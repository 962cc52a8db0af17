"""Conformance: ``/stop`` across processes (``store.api.stops``) on every engine with leases.

Two Stores on one engine are two processes as far as the store can tell: each has its own holder. One
holds a conversation's turn lease; the other writes a stop request against it and waits; the holder
finds the request (only its own, only one younger than its turn), lets go, and the request is gone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from store.api.stops import STOP_PREFIX, STOP_TTL_S
from store.api.store import Store
from store.leases import Claimed
from store.models import Scope
from tests.store.conftest import ALICE, MAX_CHARS
from tests.store.engines import ENGINES
from tests.waiting import until

pytestmark = pytest.mark.anyio


@pytest.fixture(params=sorted(ENGINES))
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    async with ENGINES[request.param](tmp_path) as opened:
        yield Store(opened, max_message_chars=MAX_CHARS), Store(opened, max_message_chars=MAX_CHARS)


async def _conversation(store: Store, scope: Scope = ALICE) -> str:
    return (await store.conversations.create(scope, "c")).sid


async def test_a_stop_reaches_the_holder_and_waits_for_its_turn_to_end(stores: tuple[Store, Store]) -> None:
    holder, other = stores
    cid = await _conversation(holder)
    stopped = anyio.Event()
    seen: list[bool] = []

    async def turn() -> None:
        async with holder.leases.conversation_lock(ALICE, cid, ttl_s=60, wait_s=5):
            locked = anyio.current_time()
            stopped.set()
            await until(
                lambda: holder.stops.requested(ALICE, cid, running_s=anyio.current_time() - locked + 1),
                timeout=20,
                interval=0.02,
                what="the stop request",
            )
            seen.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(turn)
        await stopped.wait()
        with anyio.fail_after(20):
            assert await other.stops.request(ALICE, cid, wait_s=15) is True
        # the request returned only once the turn let go of its lease
        assert seen == [True]
        assert await holder.engine.get_lease(ALICE, f"turn:{cid}") is None
    assert await holder.engine.get_lease(ALICE, STOP_PREFIX + cid) is None
    assert (other.leases.stats.stops_written, holder.leases.stats.stops_seen) == (1, 1)
    assert (holder.leases.stats.stops_written, other.leases.stats.stops_seen) == (0, 0)


async def test_no_stop_is_written_when_no_other_process_runs_the_conversation(
    stores: tuple[Store, Store],
) -> None:
    holder, other = stores
    cid = await _conversation(holder)
    assert await other.stops.request(ALICE, cid) is False
    async with holder.leases.conversation_lock(ALICE, cid, ttl_s=60, wait_s=5):
        # the holder's own lease: a local /stop cancels it directly, nothing is written
        assert await holder.stops.request(ALICE, cid) is False
    assert await holder.engine.get_lease(ALICE, STOP_PREFIX + cid) is None
    assert other.leases.stats.stops_written == holder.leases.stats.stops_written == 0


async def test_a_request_only_stops_the_turn_it_names(stores: tuple[Store, Store]) -> None:
    holder, other = stores
    cid = await _conversation(holder)
    aimed = f"{STOP_PREFIX}{other.leases.holder}|x"  # aimed at another process's turn
    await holder.engine.claim(ALICE, STOP_PREFIX + cid, aimed, int(STOP_TTL_S * 1000))
    assert await holder.stops.requested(ALICE, cid, running_s=60) is False
    assert await other.stops.requested(ALICE, cid, running_s=60) is True
    # consumed: found once
    assert await other.stops.requested(ALICE, cid, running_s=60) is False


async def test_a_request_older_than_the_turn_is_ignored(stores: tuple[Store, Store]) -> None:
    holder, _ = stores
    cid = await _conversation(holder)
    await holder.engine.claim(
        ALICE, STOP_PREFIX + cid, f"{STOP_PREFIX}{holder.leases.holder}|x", int(STOP_TTL_S * 1000)
    )

    async def old_enough() -> bool:
        lease = await holder.engine.get_lease(ALICE, STOP_PREFIX + cid)
        assert lease is not None and lease.expires_in_ms is not None
        return STOP_TTL_S * 1000 - lease.expires_in_ms >= 300

    await until(old_enough, interval=0.05, what="the request to be 0.3 s old")
    # a turn that has held its lease for 0.1 s started after the request: not its stop
    assert await holder.stops.requested(ALICE, cid, running_s=0.1) is False
    assert await holder.stops.requested(ALICE, cid, running_s=5) is True


async def test_claim_lease_says_how_a_leader_lease_was_taken(stores: tuple[Store, Store]) -> None:
    """The Telegram poller lease (``leases.claim``): taken, renewed, refused to another holder, free
    again once released."""
    first, second = stores
    scope = Scope("_system", "telegram")
    assert await first.leases.claim(scope, "telegram-poller:1", ttl_s=5) == Claimed.TAKEN
    assert await first.leases.claim(scope, "telegram-poller:1", ttl_s=5) == Claimed.RENEWED
    assert await second.leases.claim(scope, "telegram-poller:1", ttl_s=5) == Claimed.REFUSED
    await first.leases.release(scope, "telegram-poller:1")
    assert await second.leases.claim(scope, "telegram-poller:1", ttl_s=5) == Claimed.TAKEN
