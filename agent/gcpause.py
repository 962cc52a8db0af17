"""The garbage collector's pauses: counted for ``/metrics``, and kept short by freezing what start-up built.

CPython's cyclic collector stops the event loop while it runs. A collection of the oldest generation
walks every tracked object: after start-up that is the imported modules, classes, settings and tool
schemas (a few hundred thousand objects that live as long as the daemon), and such a pass costs
milliseconds, taken by whichever turn happens to allocate at that moment: a turn's p99 is made of
them. :func:`freeze_after_startup` runs one full collection when the daemon is up, then moves every
surviving object to the permanent generation (``gc.freeze()``, the technique of long-running servers
such as Instagram's), which later collections skip. Objects made afterwards (conversations, windows,
messages) are collected as before; only what existed at start-up is never scanned again, which
matters for memory only if start-up garbage had cycles, and the full collection before freezing
clears those.

The thresholds are raised as well (:data:`THRESHOLDS`). With CPython's 700 / 10 / 10, 200 chats
streaming at once made ~250 young collections per load, and the turns in flight (coroutines, cells,
events: 80,000-100,000 objects) outlived them into the oldest generation, whose collection then ran
once or twice per load at 20-28 ms: every stream's next token waited for it. A first generation of
20,000 is collected ~6 times in such a load (up to 10 ms each), and fewer objects in flight are
there to outlive a collection. The oldest generation is collected after 50 x 100 young collections,
and (CPython's own rule) only once a quarter more objects reached it since the last full pass:
garbage cycles that get that far wait longer. Over 50,000 soak turns no full collection ran and RSS
stayed flat (``python -m bench.soak``, docs/performance.md).

:data:`GC_STATS` counts every collection and its pause per generation (``gc.callbacks``), shown as
``hero_gc_collections_total``, ``hero_gc_pause_seconds_total`` and ``hero_gc_pause_max_seconds``, with
``hero_gc_frozen_objects`` and ``hero_gc_threshold``.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

log = structlog.get_logger()


@dataclass(slots=True)
class GCStats:
    """Collections and their pauses, per generation, since :meth:`install`."""

    collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    pause_s: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    max_pause_s: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    _started: float = 0.0
    _installed: bool = False

    def install(self) -> None:
        """Start counting (idempotent)."""
        if not self._installed:
            gc.callbacks.append(self._on_gc)
            self._installed = True

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen = int(info.get("generation", 2))
        pause = time.perf_counter() - self._started
        self.collections[gen] += 1
        self.pause_s[gen] += pause
        self.max_pause_s[gen] = max(self.max_pause_s[gen], pause)

    def lines(self) -> list[str]:
        gens = range(3)
        return [
            "# HELP hero_gc_collections_total Garbage collections run, by generation.",
            "# TYPE hero_gc_collections_total counter",
            *(f'hero_gc_collections_total{{generation="{g}"}} {self.collections[g]}' for g in gens),
            "# HELP hero_gc_pause_seconds_total Time the event loop stood still in garbage collections.",
            "# TYPE hero_gc_pause_seconds_total counter",
            *(f'hero_gc_pause_seconds_total{{generation="{g}"}} {self.pause_s[g]:.6f}' for g in gens),
            "# HELP hero_gc_pause_max_seconds The longest garbage collection pause, by generation.",
            "# TYPE hero_gc_pause_max_seconds gauge",
            *(f'hero_gc_pause_max_seconds{{generation="{g}"}} {self.max_pause_s[g]:.6f}' for g in gens),
            "# HELP hero_gc_frozen_objects Objects moved out of the collector's reach after start-up.",
            "# TYPE hero_gc_frozen_objects gauge",
            f"hero_gc_frozen_objects {gc.get_freeze_count()}",
            "# HELP hero_gc_threshold The collector's threshold per generation (gc.get_threshold).",
            "# TYPE hero_gc_threshold gauge",
            *(f'hero_gc_threshold{{generation="{g}"}} {t}' for g, t in enumerate(gc.get_threshold())),
        ]


#: the daemon's collection thresholds, per generation (CPython's default is 700, 10, 10)
THRESHOLDS: Final = (20_000, 50, 100)

#: the process's collector (one per process, like the collector itself)
GC_STATS = GCStats()


def freeze_after_startup() -> int:
    """One full collection, then freeze what survived and set :data:`THRESHOLDS`; returns the number
    of frozen objects (also logged as ``daemon.gc_frozen``). Call it once everything start-up loads
    is loaded."""
    GC_STATS.install()
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    frozen = gc.get_freeze_count()
    log.info(
        "daemon.gc_frozen",
        objects=frozen,
        ms=round((time.perf_counter() - started) * 1000, 1),
        thresholds=list(THRESHOLDS),
    )
    return frozen
