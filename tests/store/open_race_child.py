"""Child process: opens the embedded store in a fresh data dir at the parent's signal, round after round.

    python tests/store/open_race_child.py NAME

Prints ``ready``, then for each line ``<data dir> <start>`` read from stdin waits until the
system-wide monotonic clock reaches ``<start>`` (seconds, ``time.monotonic()``: one clock for every
process on Linux), opens an ``EmbeddedEngine`` there, stores one record (key ``NAME``), closes it and
prints ``ok`` (or ``error <message>``). Several of these children get the same line: they open one
brand-new data dir at the same moment, as two daemons started together on a new shared data dir do.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio

from config.logging import configure_logging
from config.settings import LoggingSettings
from store.errors import StoreError
from store.models import Kind, Scope
from store.sqlite.engine import EmbeddedEngine

SCOPE = Scope("default", "alice")


async def open_and_write(data_dir: Path, name: str) -> str:
    try:
        async with EmbeddedEngine(data_dir) as engine:
            await engine.create(Kind.STATE, SCOPE, {"key": name, "value": "1"})
    except StoreError as exc:
        return f"error {exc}"
    return "ok"


def main(name: str) -> None:
    configure_logging(LoggingSettings(level="warning"), stream=sys.stderr)  # stdout carries the answers
    print("ready", flush=True)
    for line in sys.stdin:
        data_dir, start = line.split()
        while time.monotonic() < float(start):  # a few ms: every child starts its opening together
            pass
        print(anyio.run(open_and_write, Path(data_dir), name), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
