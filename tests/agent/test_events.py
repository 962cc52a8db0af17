"""Text deltas waiting together for a busy consumer reach it as one (``agent.events.joined_deltas``)."""

from __future__ import annotations

import dataclasses
import math

import anyio
import pytest

from agent.events import Done, TextDelta, ToolStarted, TurnEvent, joined_deltas
from agent.providers.base import TEXT_STATS

pytestmark = pytest.mark.anyio


async def test_waiting_deltas_are_joined_up_to_the_next_other_event() -> None:
    send, receive = anyio.create_memory_object_stream[TurnEvent](max_buffer_size=math.inf)
    async with send, receive:
        for event in (
            TextDelta("Hel"),
            TextDelta("lo, "),
            TextDelta("world"),
            ToolStarted("c1", "clock", "{}"),
            TextDelta("It is "),
            TextDelta("noon."),
            Done("conv", "m1", "Hello, worldIt is noon."),
        ):
            send.send_nowait(event)
        before = dataclasses.replace(TEXT_STATS)
        out: list[TurnEvent] = []
        with anyio.fail_after(5):
            while len(out) < 4:
                out += joined_deltas(await receive.receive(), receive)
        assert out == [
            TextDelta("Hello, world"),
            ToolStarted("c1", "clock", "{}"),
            TextDelta("It is noon."),
            Done("conv", "m1", "Hello, worldIt is noon."),
        ]
        assert TEXT_STATS.deltas - before.deltas == 2


async def test_a_delta_with_nothing_behind_it_goes_on_alone() -> None:
    send, receive = anyio.create_memory_object_stream[TurnEvent](max_buffer_size=math.inf)
    async with receive:
        first = TextDelta("alone")
        send.send_nowait(first)
        send.close()  # the turn ended: the stream is empty and closed behind the delta
        assert joined_deltas(await receive.receive(), receive) == [first]
        assert joined_deltas(Done("c", "m", "alone"), receive) == [Done("c", "m", "alone")]
