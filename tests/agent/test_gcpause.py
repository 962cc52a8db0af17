"""The collector's pauses are counted per generation (agent/gcpause.py)."""

from __future__ import annotations

import gc

from agent.gcpause import GC_STATS
from agent.metrics import TurnMetrics


def test_every_collection_and_its_pause_is_counted() -> None:
    GC_STATS.install()
    GC_STATS.install()  # idempotent: one callback
    assert gc.callbacks.count(GC_STATS._on_gc) == 1
    full, paused = GC_STATS.collections[2], GC_STATS.pause_s[2]
    gc.collect()
    assert GC_STATS.collections[2] == full + 1
    assert GC_STATS.pause_s[2] > paused
    assert GC_STATS.max_pause_s[2] > 0
    text = "\n".join(TurnMetrics().render_lines())
    assert f'hero_gc_collections_total{{generation="2"}} {GC_STATS.collections[2]}' in text
