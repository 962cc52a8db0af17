"""The collector's pauses are counted per generation, and full collections run in quiet moments
(agent/gcpause.py)."""

from __future__ import annotations

import gc
import time

import anyio
import pytest

from agent.core import Agent
from agent.events import TextDelta
from agent.gcpause import GC_STATS, collect_in_quiet, full_collection_due
from agent.metrics import TurnMetrics
from tests.agent.conftest import SCOPE, req
from tests.fakes.openai_server import FakeOpenAI, reply_text
from tests.waiting import until


def test_every_collection_and_its_pause_is_counted() -> None:
    GC_STATS.install()
    GC_STATS.install()  # idempotent: one callback
    assert gc.callbacks.count(GC_STATS._on_gc) == 1
    full, paused = GC_STATS.collections[2], GC_STATS.pause_s[2]
    before = time.monotonic()
    gc.collect()
    assert GC_STATS.collections[2] == full + 1
    assert GC_STATS.pause_s[2] > paused
    assert GC_STATS.max_pause_s[2] > 0
    assert GC_STATS.last_full_at >= before
    text = "\n".join(TurnMetrics().render_lines())
    assert f'hero_gc_collections_total{{generation="2"}} {GC_STATS.collections[2]}' in text
    assert f"hero_gc_quiet_collections_total {GC_STATS.quiet_collections}" in text


@pytest.mark.parametrize(
    ("age_s", "busy", "due"),
    [
        (10.0, False, False),  # a full collection ran lately
        (300.0, False, True),  # old enough, and no turn runs
        (300.0, True, False),  # old enough, but a turn runs: wait for a quiet moment
        (3599.0, True, False),
        (3600.0, True, True),  # an hour: even while turns run
    ],
)
def test_a_full_collection_is_due_in_a_quiet_moment_or_after_an_hour(
    age_s: float, busy: bool, due: bool
) -> None:
    assert full_collection_due(age_s, busy, idle_age_s=300.0, max_age_s=3600.0) is due


@pytest.mark.anyio
@pytest.mark.parametrize("busy", [False, True])
async def test_the_quiet_collector_runs_a_full_collection_when_due(busy: bool) -> None:
    # idle: due at once when no turn runs; busy: due only by age, set to nothing here
    quiet, full = GC_STATS.quiet_collections, GC_STATS.collections[2]
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: collect_in_quiet(
                lambda: busy,
                check_every_s=0.001,
                idle_age_s=0.0,
                max_age_s=0.0 if busy else 3600.0,
            )
        )
        await until(lambda: GC_STATS.quiet_collections > quiet, what="a quiet collection")
        tg.cancel_scope.cancel()
    assert GC_STATS.collections[2] > full  # it was a real full collection


@pytest.mark.anyio
async def test_the_agent_is_busy_while_a_turn_runs(agent: Agent, fake: FakeOpenAI) -> None:
    """What the daemon's quiet collector asks before a full collection (channels/daemon.py)."""
    fake.enqueue(reply_text("one two three", chunks=3, chunk_delay=0.2))
    await agent.conversations.new(SCOPE, channel="cli")
    assert not agent.busy
    seen: list[bool] = []
    with anyio.fail_after(10):
        async for ev in agent.handle(req("hello")):
            if isinstance(ev, TextDelta):
                seen.append(agent.busy)
    assert seen and all(seen)
    assert not agent.busy
