"""A daemon stand-in for tests/store/test_writer_process.py: opens the embedded engine with its
writer in a process of its own on ``argv[1]``, prints that process's pid, and waits to be killed."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from store import EmbeddedEngine


async def main(data_dir: Path) -> None:
    async with EmbeddedEngine(data_dir, writer="process") as engine:
        print(f"WRITER {engine.writer_pid}", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]))
