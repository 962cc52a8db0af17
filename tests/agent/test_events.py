"""A turn's events on their way to its consumer (``agent.events.TurnEvents``), and text deltas
waiting together for a busy consumer reaching it as one (``agent.events.joined_deltas``)."""

from __future__ import annotations

import dataclasses

import anyio
import pytest

from agent.events import Done, TextDelta, ToolStarted, TurnEvent, TurnEvents, joined_deltas
from agent.providers.base import TEXT_STATS

pytestmark = pytest.mark.anyio


async def test_waiting_deltas_are_joined_up_to_the_next_other_event() -> None:
    events = TurnEvents()
    for event in (
        TextDelta("Hel"),
        TextDelta("lo, "),
        TextDelta("world"),
        ToolStarted("c1", "clock", "{}"),
        TextDelta("It is "),
        TextDelta("noon."),
        Done("conv", "m1", "Hello, worldIt is noon."),
    ):
        events.send_nowait(event)
    before = dataclasses.replace(TEXT_STATS)
    out: list[TurnEvent] = []
    with anyio.fail_after(5):
        while len(out) < 4:
            out += joined_deltas(await events.receive(), events)
    assert out == [
        TextDelta("Hello, world"),
        ToolStarted("c1", "clock", "{}"),
        TextDelta("It is noon."),
        Done("conv", "m1", "Hello, worldIt is noon."),
    ]
    assert TEXT_STATS.deltas - before.deltas == 2


async def test_a_delta_with_nothing_behind_it_goes_on_alone() -> None:
    events = TurnEvents()
    first = TextDelta("alone")
    events.send_nowait(first)
    events.close()  # the turn ended: the queue is empty and closed behind the delta
    assert joined_deltas(await events.receive(), events) == [first]
    assert joined_deltas(Done("c", "m", "alone"), events) == [Done("c", "m", "alone")]


async def test_events_arrive_in_order_across_waits_then_the_end() -> None:
    events = TurnEvents()
    got: list[TurnEvent] = []
    waiting = anyio.Event()

    async def consume() -> None:
        while True:
            if not got:
                waiting.set()  # about to wait on an empty queue
            try:
                got.append(await events.receive())
            except anyio.EndOfStream:
                return

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await waiting.wait()
            events.send_nowait(TextDelta("a"))  # wakes the waiting consumer
            events.send_nowait(TextDelta("b"))
            while len(got) < 2:
                await anyio.lowlevel.checkpoint()
            events.send_nowait(Done("c", "m", "ab"))
            events.close()
    assert got == [TextDelta("a"), TextDelta("b"), Done("c", "m", "ab")]
    with pytest.raises(anyio.EndOfStream):  # and stays ended
        events.receive_nowait()


async def test_nothing_waiting_is_would_block_and_a_closed_queue_drains_before_its_end() -> None:
    events = TurnEvents()
    with pytest.raises(anyio.WouldBlock):
        events.receive_nowait()
    events.send_nowait(TextDelta("last"))
    events.close()
    events.send_nowait(TextDelta("after the end"))  # dropped: the task closed the queue
    assert events.receive_nowait() == TextDelta("last")
    with pytest.raises(anyio.EndOfStream):
        events.receive_nowait()


async def test_an_abandoned_queue_drops_what_waits_and_what_comes() -> None:
    events = TurnEvents()
    events.send_nowait(TextDelta("unread"))
    events.abandon()  # the consumer went away
    events.send_nowait(TextDelta("later"))  # the turn's task goes on emitting until it is cancelled
    events.close()
    with pytest.raises(anyio.EndOfStream):
        events.receive_nowait()


async def test_a_waiting_receive_is_cancelled_by_its_scope() -> None:
    events = TurnEvents()
    with anyio.fail_after(5):
        with anyio.move_on_after(0.01) as scope:
            await events.receive()
    assert scope.cancelled_caught
    events.send_nowait(TextDelta("after"))  # the queue still works after a cancelled wait
    assert await events.receive() == TextDelta("after")
