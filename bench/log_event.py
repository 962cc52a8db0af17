"""The cost of one rendered log event, as the daemon writes them (JSON lines at INFO, to /dev/null).

Four kinds of event, each emitted ``--events`` times per round:

* **ours**: a structlog event like a turn's ``turn.finished``, inside the context a turn binds
  (context, user, channel, turn_id, conversation) with two fields of its own;
* **ours+secret**: an event with a field named like a secret and a bearer token inside a string that
  differs from one event to the next (the redactor's slow path: both masked, nothing remembered);
* **library**: a stdlib record from a third-party logger (``uvicorn.error``, with a ``%d`` argument),
  formatted by the same handler;
* **below level**: a structlog ``debug`` event at INFO (nothing is written).

It prints the CPU time per event (this thread, user + system, so the write to /dev/null is counted) in
microseconds, best and median of ``--rounds`` rounds, and the machine's load average.

    .venv/bin/python -m bench.log_event [--events 20000] [--rounds 7]

To compare with another checkout, run it from there with the same venv:
``cd /work/main && PYTHONPATH=. /path/to/.venv/bin/python /path/to/bench/log_event.py``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import statistics
import time
from collections.abc import Callable

import structlog

from config.logging import configure_logging
from config.settings import LoggingSettings

log = structlog.get_logger()
library = logging.getLogger("uvicorn.error")
TURN = {
    "context": "telegram:12345678",
    "user": "12345678",
    "channel": "telegram",
    "turn_id": "01JB4ZKQ3M9X7V2N8T5R6W1Y0A",
    "conversation": "01JB4ZKQ3M9X7V2N8T5R6W1Y0B",
}


def ours() -> None:
    log.info("turn.finished", outcome="done", duration_ms=2.345)


#: more distinct strings than the redactor remembers: every one is scanned and masked
_DETAILS = itertools.cycle([f"retry {i}: Authorization: Bearer abc.def{i}" for i in range(10000)])


def ours_secret() -> None:
    log.info("provider.retry", api_key="sk-abcdefghijklmnopqrstuv", detail=next(_DETAILS))


def lib() -> None:
    library.warning("Started server process [%d]", 4242)


def below() -> None:
    log.debug("turn.step", step=1)


def per_event_us(emit: Callable[[], None], events: int) -> float:
    """CPU microseconds per call of ``emit``, over ``events`` calls."""
    start = time.thread_time_ns()
    for _ in range(events):
        emit()
    return (time.thread_time_ns() - start) / events / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=20000, help="events per kind and round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"# load average (1 min) at start: {os.getloadavg()[0]:.2f}")
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    configure_logging(LoggingSettings(level="info", format="json"), stream=devnull)
    kinds = {"ours": ours, "ours+secret": ours_secret, "library": lib, "below level": below}
    results: dict[str, list[float]] = {name: [] for name in kinds}
    with structlog.contextvars.bound_contextvars(**TURN):
        for emit in kinds.values():  # warm up: caches, the loggers' first use
            per_event_us(emit, 200)
        for _ in range(args.rounds):
            for name, emit in kinds.items():  # interleaved, so every kind sees the same machine
                results[name].append(per_event_us(emit, args.events))
    print(f"{'event':<12} {'best us':>8} {'median us':>10}")
    for name, sample in results.items():
        print(f"{name:<12} {min(sample):>8.2f} {statistics.median(sample):>10.2f}")
    print(f"# load average (1 min) at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
