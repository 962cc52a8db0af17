"""The turn-lock and cut-turn counters in the Prometheus text of ``TurnMetrics`` (what ``/metrics``
shows), fed by a real store's take-over and marks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.metrics import TurnMetrics
from store import EmbeddedEngine, Kind, ListQuery, Message, Scope, Store, owner_of

pytestmark = pytest.mark.anyio

SCOPE = Scope("default", "alice")


async def test_takeovers_renewals_and_markers_are_counted(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    owner = owner_of(child.pid)
    child.kill()
    child.wait(timeout=30)
    async with Store(EmbeddedEngine(tmp_path)) as store:
        metrics = TurnMetrics(leases=store.leases.stats)
        before = "\n".join(metrics.render_lines())
        assert 'hero_lease_takeovers_total{reason="dead_holder"} 0' in before
        assert "hero_lease_renewals_total 0" in before
        conv = await store.conversations.create(SCOPE, "t")
        await store.messages.append(
            SCOPE, Message(conversation_id=conv.sid, role="user", content="cut off", channel="cli")
        )
        await store.engine.claim(SCOPE, f"turn:{conv.sid}", "crashed", 600_000, owner=owner)
        async with store.turns.open(SCOPE, conv.sid, "again", channel="cli"):
            pass
        text = "\n".join(metrics.render_lines())
    assert 'hero_lease_takeovers_total{reason="dead_holder"} 1' in text
    assert 'hero_lease_takeovers_total{reason="lapsed"} 0' in text
    assert 'hero_interrupted_markers_total{kind="user"} 1' in text
    assert 'hero_interrupted_markers_total{kind="tool"} 0' in text
    assert "# TYPE hero_lease_lost_total counter" in text


async def _two_messages(store: Store) -> TurnMetrics:
    """A conversation and two messages appended; the metrics of ``store``."""
    metrics = TurnMetrics(store_engine=store.engine, leases=store.leases.stats)
    conv = await store.conversations.create(SCOPE, "t")
    for text in ("one", "two"):
        await store.messages.append(
            SCOPE, Message(conversation_id=conv.sid, role="user", content=text, channel="cli")
        )
    return metrics


async def test_commits_fsyncs_and_group_sizes_are_shown(tmp_path: Path) -> None:
    async with Store(EmbeddedEngine(tmp_path)) as store:
        metrics = await _two_messages(store)
        text = "\n".join(metrics.render_lines())
    # the conversation and two messages: three write batches, each committed (and fsynced) alone
    assert 'hero_store_commits_total{engine="embedded"} 3' in text
    assert 'hero_store_fsyncs_total{engine="embedded"} 3' in text
    assert 'hero_store_group_commit_batches_bucket{engine="embedded",le="1"} 3' in text
    assert 'hero_store_group_commit_batches_sum{engine="embedded"} 3' in text
    assert 'hero_store_group_commit_batches_count{engine="embedded"} 3' in text
    assert 'hero_store_early_answers_total{engine="embedded"} 0' in text
    # one process opened the data dir: the switch to WAL was never tried again
    assert 'hero_store_wal_switch_retries_total{engine="embedded"} 0' in text


async def test_the_deferred_indexing_of_messages_is_shown(tmp_path: Path) -> None:
    async with Store(EmbeddedEngine(tmp_path)) as store:
        metrics = await _two_messages(store)
        # a search indexes the messages still pending (those the store's thread indexed while idle
        # are counted the same)
        found = await store.engine.list(Kind.MESSAGE, SCOPE, ListQuery(text="two"))
        assert [m["content"] for m in found.items] == ["two"]
        text = "\n".join(metrics.render_lines())
    assert 'hero_store_indexed_messages_total{engine="embedded"} 2' in text
    runs = [line for line in text.splitlines() if line.startswith("hero_store_index_runs_total{")]
    assert sorted(line.split("} ")[0] for line in runs) == [
        'hero_store_index_runs_total{engine="embedded",when="idle"',
        'hero_store_index_runs_total{engine="embedded",when="search"',
    ]
    assert sum(int(line.rsplit(" ", 1)[1]) for line in runs) >= 1


async def test_turn_openings_answered_before_their_commit_are_counted(tmp_path: Path) -> None:
    async with Store(EmbeddedEngine(tmp_path)) as store:
        metrics = TurnMetrics(store_engine=store.engine, leases=store.leases.stats)
        conv = await store.conversations.create(SCOPE, "t")
        for text in ("one", "two"):
            async with store.turns.open(SCOPE, conv.sid, text, channel="cli", early=True) as opening:
                await opening.wait_durable()
        text = "\n".join(metrics.render_lines())
    assert 'hero_store_early_answers_total{engine="embedded"} 2' in text
    assert 'hero_store_early_commit_failures_total{engine="embedded"} 0' in text
