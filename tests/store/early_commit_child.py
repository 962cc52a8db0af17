"""Child process: a turn's opening answered early (``Engine.batch_early``) whose COMMIT then fails.

    python tests/store/early_commit_child.py DATA_DIR

The commit is made to fail for real: the process's file-size limit (``RLIMIT_FSIZE``) is set just
above the store's files, so writing the transaction's log frames at COMMIT fails (``EFBIG``), while
the statements before it ran in the page cache. Prints one line per fact the parent checks:
``results <sid>`` (the results came, before the commit), ``durable failed: <error>``, ``absent``
(nothing of the batch exists once the limit is lifted), ``next ok`` (the engine's worker lives on),
``early 1 failed 1`` (its counters, as ``/metrics`` shows them).
"""

from __future__ import annotations

import resource
import signal
import sys
from pathlib import Path

import anyio

from config.logging import configure_logging
from config.settings import LoggingSettings
from store.engine import CreateStep, GetStep
from store.errors import StoreUnavailable
from store.models import Kind, Scope
from store.sqlite.engine import DB_FILE, EmbeddedEngine

SCOPE = Scope("default", "alice")


async def main(data_dir: Path) -> None:
    async with EmbeddedEngine(data_dir) as engine:
        await engine.create(Kind.STATE, SCOPE, {"key": "before", "value": "1"})
        files = [data_dir / DB_FILE, data_dir / f"{DB_FILE}-wal", data_dir / f"{DB_FILE}-shm"]
        biggest = max(f.stat().st_size for f in files if f.exists())
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (biggest + 4096, hard))
        try:
            # ~400 KiB of pages: held in the page cache until COMMIT writes them to the log
            step = CreateStep(Kind.STATE, {"key": "big", "value": "x" * 400_000})
            results, durable = await engine.batch_early(SCOPE, [step])
            print(f"results {results.of(step)['sid']}", flush=True)
            assert durable is not None
            try:
                await durable
                print("durable ok", flush=True)
            except StoreUnavailable as exc:
                print(f"durable failed: {exc}", flush=True)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        sid = str(results.of(step)["sid"])
        print(
            "absent" if await engine.run(SCOPE, GetStep(Kind.STATE, sid)) is None else "present", flush=True
        )
        await engine.create(Kind.STATE, SCOPE, {"key": "after", "value": "1"})
        print("next ok", flush=True)
        stats = engine.commit_stats()
        assert stats is not None
        print(f"early {stats.early} failed {stats.early_failed}", flush=True)


if __name__ == "__main__":
    configure_logging(LoggingSettings(level="warning"), stream=sys.stderr)  # stdout carries the facts
    anyio.run(main, Path(sys.argv[1]))
