"""``Store.turns.open``: the turn lease, the user message and the turn's reads in one engine batch."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from store.api.store import Store
from store.api.turn import TurnReads
from store.engine import CreateStep, DelegatingEngine, Engine, Results, Step
from store.errors import Conflict, InvalidInput, NotFound, StoreError
from store.models import Kind, Message, Scope, UsageEntry
from tests.store.conftest import ALICE, BOB, MAX_CHARS
from tests.store.helpers import conversation_with

pytestmark = pytest.mark.anyio


async def test_stores_the_message_and_reads_the_whole_window(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 4)
    async with store.turns.open(ALICE, conv.sid, "hello", channel="web", sender="tg:1") as opened:
        assert opened.message.content == "hello" and opened.message.seq == 5
        assert opened.message.channel == "web" and opened.message.sender == "tg:1"
        assert opened.conversation.message_count == 5 and opened.conversation.last_channel == "web"
        assert [m.seq for m in opened.window] == [1, 2, 3, 4, 5]
        assert opened.window[-1] == opened.message
        assert not opened.window_full
    assert await store.messages.history(ALICE, conv.sid, limit=50) == opened.window


async def test_reads_only_what_follows_after_seq_and_flags_a_full_read(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 6)
    async with store.turns.open(ALICE, conv.sid, "x", channel="cli", reads=TurnReads(10, 4)) as opened:
        assert [m.seq for m in opened.window] == [5, 6, 7] and not opened.window_full
    await store.messages.append(
        ALICE, Message(conversation_id=conv.sid, role="assistant", content="answer to x", channel="cli")
    )
    async with store.turns.open(ALICE, conv.sid, "y", channel="cli", reads=TurnReads(2, 4)) as opened:
        # the newest two of seq > 4; what lies between is not read, and the flag says so
        assert [m.seq for m in opened.window] == [8, 9] and opened.window_full


async def test_the_window_starts_after_the_clear_boundary(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 4)
    await store.conversations.clear(ALICE, conv.sid)
    async with store.turns.open(ALICE, conv.sid, "after the clear", channel="cli") as opened:
        assert opened.conversation.clear_seq == 4
        assert [m.content for m in opened.window] == ["after the clear"]


async def test_recalls_matching_and_recent_memories(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 0)
    await store.memories.add(ALICE, "The user keeps bees in Ghent")
    for i in range(3):
        await store.memories.add(ALICE, f"unrelated fact {i}")
    await store.memories.add(BOB, "Bob also keeps bees")
    reads = TurnReads(recall_text="how are my bees?", recall_limit=5, recent_memories=2)
    async with store.turns.open(ALICE, conv.sid, "how are my bees?", channel="cli", reads=reads) as opened:
        assert [m.content for m in opened.matching_memories] == ["The user keeps bees in Ghent"]
        assert [m.content for m in opened.recent_memories] == ["unrelated fact 2", "unrelated fact 1"]
    async with store.turns.open(ALICE, conv.sid, "and?", channel="cli") as opened:
        assert opened.matching_memories == [] and opened.recent_memories == []


async def test_holds_the_turn_lease_until_it_exits(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 0)
    other = Store(store.engine)  # another process: only the store lease separates them
    async with store.turns.open(ALICE, conv.sid, "mine", channel="cli"):
        with pytest.raises(Conflict):
            async with other.leases.conversation_lock(ALICE, conv.sid, wait_s=0.05):
                pytest.fail("the lease was taken twice")
        await store.messages.append(
            ALICE, Message(conversation_id=conv.sid, role="assistant", content="", channel="cli")
        )
    with anyio.fail_after(5):
        async with other.turns.open(ALICE, conv.sid, "theirs", channel="cli") as opened:
            assert [m.content for m in opened.window] == ["mine", "", "theirs"]


async def test_waits_for_the_lease_then_opens(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 0)
    other = Store(store.engine)
    order: list[str] = []

    async def second() -> None:
        async with other.turns.open(ALICE, conv.sid, "second", channel="cli", wait_s=10) as opened:
            order.append("second opened")
            assert [m.content for m in opened.window] == ["first", "answer", "second"]

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg, store.turns.open(ALICE, conv.sid, "first", channel="cli"):
            tg.start_soon(second)
            await wait_all_tasks_blocked()  # the second one is trying (and waiting) by now
            await store.messages.append(
                ALICE, Message(conversation_id=conv.sid, role="assistant", content="answer", channel="cli")
            )
            order.append("first closed")
    assert order == ["first closed", "second opened"]


async def test_a_repeated_request_key_stores_one_message(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 0)
    async with store.turns.open(ALICE, conv.sid, "hi", channel="tg", request_key="upd:1") as first:
        pass
    async with store.turns.open(ALICE, conv.sid, "hi", channel="tg", request_key="upd:1") as again:
        assert again.message.sid == first.message.sid
    # the redelivered request answers its own message now: no interrupted marker for it
    assert len(await store.messages.history(ALICE, conv.sid)) == 1


async def test_a_missing_or_foreign_conversation_stores_nothing(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 1)
    for scope, sid in ((ALICE, "zzzz"), (BOB, conv.sid)):
        with pytest.raises(NotFound):
            async with store.turns.open(scope, sid, "lost", channel="cli"):
                pytest.fail("opened a turn in a missing conversation")
    assert [m.content for m in await store.messages.history(ALICE, conv.sid)] == ["chat message 1"]
    # and no lease was left behind
    with anyio.fail_after(5):
        async with Store(store.engine).leases.conversation_lock(ALICE, conv.sid, wait_s=0.05):
            pass


@pytest.mark.parametrize(
    ("text", "conversation"),
    [("x" * (MAX_CHARS + 1), None), ("nul\x00", None), ("fine", "not an id!")],
)
async def test_bad_input_is_refused_before_anything_is_stored(
    store: Store, text: str, conversation: str | None
) -> None:
    conv = await conversation_with(store, ALICE, 0)
    with pytest.raises(InvalidInput):
        async with store.turns.open(ALICE, conversation or conv.sid, text, channel="cli"):
            pytest.fail("opened")
    assert await store.messages.history(ALICE, conv.sid) == []


async def test_usage_is_written_when_the_turn_closes(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 0)
    async with store.turns.open(ALICE, conv.sid, "hi", channel="cli") as opened:
        opened.usage.append(UsageEntry(model="m", prompt_tokens=3, conversation_id=conv.sid, ok=True))
        assert (await store.records.list_usage(ALICE)).items == []
    [entry] = (await store.records.list_usage(ALICE)).items
    assert (entry.model, entry.prompt_tokens, entry.conversation_id) == ("m", 3, conv.sid)


async def test_usage_that_cannot_be_written_still_releases_the_lease(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 0)
    async with store.turns.open(ALICE, conv.sid, "hi", channel="cli") as opened:
        opened.usage.append(UsageEntry(model="m", latency_ms=float("nan")))  # not JSON
    assert (await store.records.list_usage(ALICE)).items == []
    with anyio.fail_after(5):
        async with Store(store.engine).leases.conversation_lock(ALICE, conv.sid, wait_s=0.05):
            pass


class RecordingEngine(DelegatingEngine):
    """The real engine, with each batch's step types recorded."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self.batches: list[list[str]] = []

    async def batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        self.batches.append([_step_name(s) for s in steps])
        return await self.inner.batch(scope, steps)


def _step_name(step: Step) -> str:
    if isinstance(step, CreateStep):
        return f"create {step.kind.value}"
    return type(step).__name__


def _final(conversation_id: str) -> Message:
    return Message(conversation_id=conversation_id, role="assistant", content="the answer", channel="cli")


async def test_finish_turn_writes_message_usage_and_release_in_one_batch(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 0)
    recording = RecordingEngine(store.engine)
    mine, other = Store(recording), Store(store.engine)
    async with mine.turns.open(ALICE, conv.sid, "hi", channel="cli") as opened:
        opened.usage.append(UsageEntry(model="m", prompt_tokens=3, conversation_id=conv.sid, ok=True))
        recording.batches.clear()
        final = await mine.turns.finish(opened, _final(conv.sid))
        assert final.seq == 2 and final.content == "the answer"
        # released already, before the block ends: another holder gets the lease at once
        with anyio.fail_after(5):
            async with other.leases.conversation_lock(ALICE, conv.sid, wait_s=0.05):
                pass
        with pytest.raises(RuntimeError):
            await mine.turns.finish(opened, _final(conv.sid))
    usage = f"create {Kind.USAGE.value}"
    assert recording.batches == [[f"create {Kind.MESSAGE.value}", usage, "ReleaseStep"]]
    [entry] = (await store.records.list_usage(ALICE)).items
    assert entry.prompt_tokens == 3
    assert [m.content for m in await store.messages.history(ALICE, conv.sid)] == ["hi", "the answer"]


async def test_a_failed_finish_stores_nothing_on_atomic_engines_and_still_releases(store: Store) -> None:
    conv = await conversation_with(store, ALICE, 0)
    with pytest.raises(StoreError):
        async with store.turns.open(ALICE, conv.sid, "hi", channel="cli") as opened:
            opened.usage.append(UsageEntry(model="m", latency_ms=float("nan")))  # not JSON
            await store.turns.finish(opened, _final(conv.sid))
    contents = [m.content for m in await store.messages.history(ALICE, conv.sid)]
    if store.engine.capabilities.atomic_batch:
        assert contents == ["hi"]
    else:  # step by step: the message may be stored before the usage entry fails
        assert contents in (["hi"], ["hi", "the answer"])
    assert (await store.records.list_usage(ALICE)).items == []  # the exit does not write the usage again
    with anyio.fail_after(5):
        async with Store(store.engine).leases.conversation_lock(ALICE, conv.sid, wait_s=0.05):
            pass
