"""Conformance: leases with their holder's process identity (``owner``), the compare-and-swap take-over
(``replace``), ``get_lease``/``list_leases``, renewal while held, the take-over of a dead holder of
this host, and the marks of a cut turn (``MarkCutStep``: in ``turns.open`` and at daemon start).

Dead holders are real: a child process is started, its identity read from /proc, then it is killed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from store.api.store import Store
from store.cut_turns import CLIENT_NO_RESULT, INTERRUPTED_RESULT, INTERRUPTED_TEXT, INTERRUPTED_TYPE
from store.engine import ClaimStep, Engine, MarkCutStep
from store.errors import Conflict, LeaseLost
from store.leases import Claimed, KeyedLocks, LeaseOwner, known_dead, owner_of, this_process
from store.models import Message
from tests.store.conftest import ALICE, ALICE_ELSEWHERE, BOB, MAX_CHARS
from tests.store.engines import ENGINES
from tests.waiting import until

pytestmark = pytest.mark.anyio


@pytest.fixture(params=sorted(ENGINES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """These tests are about the engines' own leases (holder identity, take-over): the engines that
    have them, not the core-only one, whose lease records know no owner (see docs/store.md)."""
    async with ENGINES[request.param](tmp_path) as opened:
        yield Store(opened, max_message_chars=MAX_CHARS)


def dead_owner() -> LeaseOwner:
    """The identity of a process of this host that existed and is gone."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = owner_of(child.pid)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert owner is not None and known_dead(owner)
    return owner


async def test_a_lease_keeps_its_owner_and_reads_back(engine: Engine) -> None:
    me = this_process()
    assert me is not None and not known_dead(me)
    assert await engine.claim(ALICE, "turn:a", "h1", 60_000, owner=me) == Claimed.TAKEN
    assert await engine.claim(BOB, "turn:b", "h2", 60_000) == Claimed.TAKEN
    assert await engine.claim(ALICE, "lease:x", "h3", None) == Claimed.TAKEN
    assert await engine.claim(ALICE_ELSEWHERE, "turn:c", "h4", 60_000) == Claimed.TAKEN
    lease = await engine.get_lease(ALICE, "turn:a")
    assert lease is not None and (lease.user_id, lease.key, lease.holder, lease.owner) == (
        "alice",
        "turn:a",
        "h1",
        me,
    )
    assert lease.expires_in_ms is not None and 0 < lease.expires_in_ms <= 60_000 and not lease.lapsed
    never = await engine.get_lease(ALICE, "lease:x")
    assert never is not None and never.expires_in_ms is None and never.owner is None
    assert await engine.get_lease(ALICE, "turn:missing") is None
    # every user of the context, only the prefix, never another context
    listed = await engine.list_leases("default", "turn:")
    assert sorted((x.user_id, x.key, x.holder) for x in listed) == [
        ("alice", "turn:a", "h1"),
        ("bob", "turn:b", "h2"),
    ]
    assert [x.key for x in await engine.list_leases("other", "turn:")] == ["turn:c"]


async def test_claim_outcomes_and_the_compare_and_swap(engine: Engine) -> None:
    assert await engine.claim(ALICE, "turn:x", "dead", 60_000) == Claimed.TAKEN
    assert await engine.claim(ALICE, "turn:x", "dead", 60_000) == Claimed.RENEWED
    refused = await engine.claim(ALICE, "turn:x", "me", 60_000)
    assert refused == Claimed.REFUSED and not refused
    # replace names the holder the claimer found dead: exactly one of two claimers gets it
    assert await engine.claim(ALICE, "turn:x", "me", 60_000, replace="dead") == Claimed.REPLACED
    assert not await engine.claim(ALICE, "turn:x", "rival", 60_000, replace="dead")
    lease = await engine.get_lease(ALICE, "turn:x")
    assert lease is not None and lease.holder == "me"
    # another holder's lapsed lease is taken, and the outcome says so
    assert await engine.claim(ALICE, "turn:y", "gone", 1)
    outcome = await until(  # a refusal is falsy: polled until the lease has lapsed
        lambda: engine.claim(ALICE, "turn:y", "next", 60_000),
        timeout=5,
        interval=0.002,
        what="the lapsed lease to be taken",
    )
    assert outcome == Claimed.LAPSED


async def test_a_dead_holder_of_this_host_is_taken_over_at_once(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "t")
    # the dead process took the turn lock with a long lease (as a crashed turn of the old code did)
    await store.engine.claim(ALICE, f"turn:{conv.sid}", "crashed", 600_000, owner=dead_owner())
    with anyio.fail_after(5):
        async with store.leases.conversation_lock(ALICE, conv.sid, wait_s=0.05):
            lease = await store.engine.get_lease(ALICE, f"turn:{conv.sid}")
            assert lease is not None and lease.owner == this_process()
    assert store.leases.stats.takeovers["dead_holder"] == 1


async def test_a_live_holder_is_never_robbed(store: Store) -> None:
    """A short lease (0.5 s) held for five times as long: the renewals (every third of it) keep it.
    Short enough that a missed renewal would show; long enough that one slow store call does not
    lapse it (with a 0.2 s lease, an OSIS call that took 248 ms on a busy CI machine did)."""
    conv = await store.conversations.create(ALICE, "t")
    holder = Store(store.engine, lease_s=0.5)
    other = Store(store.engine, lease_s=0.5)
    async with holder.leases.conversation_lock(ALICE, conv.sid, ttl_s=60):
        with pytest.raises(Conflict):
            async with other.leases.conversation_lock(ALICE, conv.sid, wait_s=2.5):
                pytest.fail("a live holder was robbed")
    assert holder.leases.stats.renewals >= 3 and holder.leases.stats.lost == 0
    assert not other.leases.stats.takeovers


async def test_a_short_turn_renews_nothing(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "t")
    async with store.leases.conversation_lock(ALICE, conv.sid):
        pass
    assert store.leases.stats.renewals == 0


async def test_a_finished_turn_stops_renewing_and_leaves_no_lease(store: Store) -> None:
    """A turn held across renewals (0.2 s lease, renewed every ~0.07 s), then finished: the renewal
    is stopped before the final batch releases the lease, and none follows it (a renewal landing
    after the release would take the lease again)."""
    conv = await store.conversations.create(ALICE, "t")
    holder = Store(store.engine, lease_s=0.2)
    with anyio.fail_after(10):
        async with holder.turns.open(ALICE, conv.sid, "hi", channel="cli", ttl_s=60) as opening:
            await until(lambda: holder.leases.stats.renewals >= 2, interval=0.02, what="two renewals")
            held = opening.lease
            await holder.turns.finish(opening, Message(conversation_id=conv.sid, role="assistant"))
            assert await store.engine.get_lease(ALICE, f"turn:{conv.sid}") is None
        renewed = holder.leases.stats.renewals
        # the renewal task has ended (finish waited for it), so no renewal can follow the release
        assert held is not None and held.renewal_ended.is_set()
    assert holder.leases.stats.renewals == renewed and holder.leases.stats.lost == 0
    assert await store.engine.get_lease(ALICE, f"turn:{conv.sid}") is None


async def test_a_holder_that_stops_renewing_lapses_within_its_lease(store: Store) -> None:
    """Another host's dead holder is not known dead: its lease lapses, then it is taken over."""
    conv = await store.conversations.create(ALICE, "t")
    foreign = LeaseOwner("another-host/pid:[1]", 4242, 1)
    await store.engine.claim(ALICE, f"turn:{conv.sid}", "elsewhere", 300, owner=foreign)
    with anyio.fail_after(10):
        async with store.leases.conversation_lock(ALICE, conv.sid, wait_s=5):
            pass
    assert store.leases.stats.takeovers["lapsed"] == 1


def _roles(messages: list[Message]) -> list[tuple[str, str, str]]:
    return [(m.role, m.status, m.content) for m in messages]


async def test_the_next_turn_marks_a_cut_turn_before_its_user_message(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "t")
    await store.messages.append(
        ALICE, Message(conversation_id=conv.sid, role="user", content="look it up", channel="web")
    )
    calls = json.dumps(
        [{"id": "c1", "name": "a", "arguments": "{}"}, {"id": "c2", "name": "b", "arguments": ""}]
    )
    await store.messages.append(
        ALICE,
        Message(conversation_id=conv.sid, role="assistant", content="", channel="web", tool_calls=calls),
    )
    await store.messages.append(
        ALICE,
        Message(
            conversation_id=conv.sid, role="tool", content="found", channel="web", tool_call_id="c1", name="a"
        ),
    )
    # ... and the process died here
    async with store.turns.open(ALICE, conv.sid, "hello?", channel="cli") as opened:
        assert [m.content for m in opened.window][-3:] == [INTERRUPTED_RESULT, INTERRUPTED_TEXT, "hello?"]
    history = await store.messages.history(ALICE, conv.sid)
    assert _roles(history) == [
        ("user", "complete", "look it up"),
        ("assistant", "complete", ""),
        ("tool", "complete", "found"),
        ("tool", "error", INTERRUPTED_RESULT),
        ("assistant", "interrupted", INTERRUPTED_TEXT),
        ("user", "complete", "hello?"),
    ]
    assert (history[3].tool_call_id, history[3].name) == ("c2", "b")
    assert history[4].message_type == INTERRUPTED_TYPE and history[4].channel == "web"
    assert dict(store.leases.stats.markers) == {"tool": 1, "user": 1}
    # that turn ended unanswered too: marked once, and marking again changes nothing
    mark = MarkCutStep(conv.sid)
    [marker] = (await store.engine.batch(ALICE, [mark])).of(mark)
    assert marker["content"] == INTERRUPTED_TEXT
    assert await store.engine.batch(ALICE, [MarkCutStep(conv.sid)]) == [[]]
    assert len(await store.messages.history(ALICE, conv.sid)) == 7


async def test_awaited_client_calls_are_left_to_their_continuation_or_answered_no_result(
    store: Store,
) -> None:
    """A step that handed client tool calls to the client ended its turn cleanly: a continuation
    (``mark_cut=False``) finds them unmarked; a new user message gets them answered ``no result``,
    the agent's own call of that step keeps its result, and no interrupted marker is added."""
    conv = await store.conversations.create(ALICE, "t")
    user = await store.messages.append(
        ALICE, Message(conversation_id=conv.sid, role="user", content="weather?", channel="api")
    )
    calls = json.dumps(
        [
            {"id": "own", "name": "current_datetime", "arguments": "{}"},
            {"id": "c1", "name": "get_weather", "arguments": "{}", "client": True},
        ]
    )
    await store.messages.append(
        ALICE,
        Message(conversation_id=conv.sid, role="assistant", content="", channel="api", tool_calls=calls),
    )
    await store.messages.append(
        ALICE,
        Message(conversation_id=conv.sid, role="tool", content="noon", channel="api", tool_call_id="own"),
    )
    async with store.turns.open(ALICE, conv.sid, "", channel="api", rerun_of=user.sid, mark_cut=False) as o:
        assert [m.content for m in o.window][-1] == "noon"
    assert len(await store.messages.history(ALICE, conv.sid)) == 3
    async with store.turns.open(ALICE, conv.sid, "never mind", channel="api") as opened:
        assert [m.content for m in opened.window][-2:] == [CLIENT_NO_RESULT, "never mind"]
    history = await store.messages.history(ALICE, conv.sid)
    assert _roles(history)[3:] == [("tool", "error", CLIENT_NO_RESULT), ("user", "complete", "never mind")]
    assert (history[3].tool_call_id, history[3].name) == ("c1", "get_weather")
    assert dict(store.leases.stats.markers) == {"tool": 1}


async def test_a_settled_tail_gets_no_marks(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "t")
    async with store.turns.open(ALICE, conv.sid, "one", channel="cli"):
        await store.messages.append(
            ALICE, Message(conversation_id=conv.sid, role="assistant", content="answer", channel="cli")
        )
    async with store.turns.open(ALICE, conv.sid, "two", channel="cli"):
        pass
    assert [m.content for m in await store.messages.history(ALICE, conv.sid)] == ["one", "answer", "two"]
    assert not store.leases.stats.markers


async def test_daemon_start_marks_the_turns_a_dead_process_held(store: Store) -> None:
    dead, me = dead_owner(), this_process()
    cut = await store.conversations.create(ALICE, "cut")
    busy = await store.conversations.create(BOB, "busy")
    for scope, conv, holder, owner in ((ALICE, cut, "crashed", dead), (BOB, busy, "alive", me)):
        await store.messages.append(
            scope, Message(conversation_id=conv.sid, role="user", content="are you there?", channel="web")
        )
        await store.engine.claim(scope, f"turn:{conv.sid}", holder, 600_000, owner=owner)
    assert await store.leases.mark_dead_holders_turns() == 1
    assert _roles(await store.messages.history(ALICE, cut.sid))[-1] == (
        "assistant",
        "interrupted",
        INTERRUPTED_TEXT,
    )
    assert await store.engine.get_lease(ALICE, f"turn:{cut.sid}") is None  # released afterwards
    # the live holder's conversation is left to it
    assert len(await store.messages.history(BOB, busy.sid)) == 1
    lease = await store.engine.get_lease(BOB, f"turn:{busy.sid}")
    assert lease is not None and lease.holder == "alive"
    assert store.leases.stats.takeovers["dead_holder"] == 1
    # twice: nothing more
    assert await store.leases.mark_dead_holders_turns() == 0
    assert len(await store.messages.history(ALICE, cut.sid)) == 2


async def test_a_required_claim_with_replace_in_a_batch(engine: Engine) -> None:
    assert await engine.claim(ALICE, "turn:z", "dead", 600_000, owner=dead_owner())
    outcome, marks = await engine.batch(
        ALICE, [ClaimStep("turn:z", "me", 60_000, replace="dead"), MarkCutStep("zz1")]
    )
    assert outcome == Claimed.REPLACED and marks == []


async def test_a_lease_taken_from_its_holder_cancels_the_holder(store: Store) -> None:
    """The holder's next renewal is refused: its block is cancelled and LeaseLost raised."""
    conv = await store.conversations.create(ALICE, "t")
    holder = Store(store.engine, lease_s=0.3)
    reached_the_end = False
    with anyio.fail_after(10), pytest.raises(LeaseLost):
        async with holder.leases.conversation_lock(ALICE, conv.sid, ttl_s=60):
            lease = await store.engine.get_lease(ALICE, f"turn:{conv.sid}")
            assert lease is not None
            # a claimer that (wrongly) judged the holder dead swaps it out
            assert await store.engine.claim(ALICE, f"turn:{conv.sid}", "thief", 60_000, replace=lease.holder)
            await anyio.sleep_forever()  # only the refused renewal's cancellation ends this block
            reached_the_end = True
    assert not reached_the_end and holder.leases.stats.lost == 1


async def test_keyed_locks_serialize_one_key_and_forget_free_keys() -> None:
    locks = KeyedLocks()
    inside: list[str] = []
    order: list[str] = []

    async def hold(key: str, name: str) -> None:
        async with locks.hold(key):
            inside.append(name)
            assert inside.count(name) == 1 and len([n for n in inside if n.startswith(key)]) == 1
            await anyio.sleep(0)  # a checkpoint while holding: the other task must wait here
            order.append(name)
            inside.remove(name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for name in ("a1", "a2", "b1"):
                tg.start_soon(hold, name[0], name)
    assert sorted(order) == ["a1", "a2", "b1"]
    assert len(locks) == 0  # nothing kept for keys nobody holds


async def test_turns_leave_no_in_process_lock_behind(store: Store) -> None:
    for i in range(3):
        conv = await store.conversations.create(ALICE, f"c{i}", channel="cli")
        async with store.turns.open(ALICE, conv.sid, "hi", channel="cli"):
            assert len(store.leases._local_locks) == 1
    assert len(store.leases._local_locks) == 0
