"""The interpreter's thread switch interval, shortened for the daemon.

Only one thread runs Python at a time (the GIL). When the store's worker thread (it runs every SQLite
statement, :mod:`store.sqlite.engine`) comes back from a statement while the event loop thread is
busy running Python, it waits for the loop thread to let go, and CPython asks for that only after the
switch interval, 5 ms by default. A turn's opening is ~15 statements; during a burst of turns (200
web chats starting at once) the worker waited for the GIL after each of them, and the turns waited
for the worker. :func:`shorten_switch_interval` sets 0.5 ms when the daemon starts. In
``python -m bench.turn_burst`` (200 turns at once, durable store) that took the time to first token
from p50 184-199 / p99 236-245 ms to p50 150-151 / p99 200-221 ms (two runs each, alternated,
docs/performance.md). A single turn is unchanged: the worker waits for the GIL only when the loop is
busy. The cost is more frequent switches between threads that both want to run, i.e. only under
load, and a switch costs microseconds. ``/metrics`` shows the interval
(``hero_gil_switch_interval_seconds``).
"""

from __future__ import annotations

import sys
from typing import Final

#: the daemon's switch interval (CPython's default is 0.005)
SWITCH_INTERVAL_S: Final = 0.0005


def shorten_switch_interval(seconds: float = SWITCH_INTERVAL_S) -> None:
    """Set the interpreter's switch interval (process-wide) to ``seconds``."""
    sys.setswitchinterval(seconds)


def lines() -> list[str]:
    return [
        "# HELP hero_gil_switch_interval_seconds How long a thread waiting for the GIL lets the running "
        "one go on before asking it to let go (sys.getswitchinterval).",
        "# TYPE hero_gil_switch_interval_seconds gauge",
        f"hero_gil_switch_interval_seconds {sys.getswitchinterval():.6f}",
    ]
