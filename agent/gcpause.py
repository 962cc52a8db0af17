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

:func:`collect_in_quiet` bounds how long such garbage waits, whatever the workload: the daemon runs a
full collection of its own once none ran for :data:`IDLE_AGE_S` and no turn is running (the pause
then costs no stream anything), and after :data:`MAX_AGE_S` even while turns run (one pause an hour
on a daemon that is never idle). ``hero_gc_quiet_collections_total`` counts them.

:data:`GC_STATS` counts every collection and its pause per generation (``gc.callbacks``), shown as
``hero_gc_collections_total``, ``hero_gc_pause_seconds_total`` and ``hero_gc_pause_max_seconds``, with
``hero_gc_frozen_objects`` and ``hero_gc_threshold``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import structlog

log = structlog.get_logger()


@dataclass(slots=True)
class GCStats:
    """Collections and their pauses, per generation, since :meth:`install`."""

    collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    pause_s: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    max_pause_s: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    #: when the last full collection ended (``time.monotonic``; 0.0 before the first)
    last_full_at: float = 0.0
    #: full collections :func:`collect_in_quiet` ran
    quiet_collections: int = 0
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
        if gen == 2:
            self.last_full_at = time.monotonic()

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
            "# HELP hero_gc_quiet_collections_total Full collections the daemon ran itself while no turn ran "
            "(or after an hour without one).",
            "# TYPE hero_gc_quiet_collections_total counter",
            f"hero_gc_quiet_collections_total {self.quiet_collections}",
            "# HELP hero_gc_threshold The collector's threshold per generation (gc.get_threshold).",
            "# TYPE hero_gc_threshold gauge",
            *(f'hero_gc_threshold{{generation="{g}"}} {t}' for g, t in enumerate(gc.get_threshold())),
        ]


#: the daemon's collection thresholds, per generation (CPython's default is 700, 10, 10)
THRESHOLDS: Final = (20_000, 50, 100)

#: a full collection is due in a quiet moment once none ran for this long
IDLE_AGE_S: Final = 300.0
#: ... and due even while turns run once none ran for this long
MAX_AGE_S: Final = 3600.0
#: how often :func:`collect_in_quiet` looks
CHECK_EVERY_S: Final = 30.0

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


def full_collection_due(age_s: float, busy: bool, idle_age_s: float, max_age_s: float) -> bool:
    """Whether a full collection is due, ``age_s`` after the last one: in a quiet moment once it is
    ``idle_age_s`` old, and regardless once it is ``max_age_s`` old."""
    return age_s >= max_age_s or (age_s >= idle_age_s and not busy)


async def collect_in_quiet(
    busy: Callable[[], bool],
    *,
    check_every_s: float = CHECK_EVERY_S,
    idle_age_s: float = IDLE_AGE_S,
    max_age_s: float = MAX_AGE_S,
) -> None:
    """Run full collections when they are due (:func:`full_collection_due`; ``busy()``: a turn is
    running), until cancelled. The collector's own rules still apply in between."""
    GC_STATS.install()
    while True:
        await anyio.sleep(check_every_s)
        age = time.monotonic() - GC_STATS.last_full_at
        if full_collection_due(age, busy(), idle_age_s, max_age_s):
            GC_STATS.quiet_collections += 1
            found = gc.collect()
            log.debug("daemon.gc_collected", unreachable=found)
