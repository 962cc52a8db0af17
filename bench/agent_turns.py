"""The agent's own cost per turn, with the LLM taken out.

A real Agent on the embedded store talks HTTP to ``FakeOpenAI`` (in its own process, answering at
once). Two instruments, both plain delegating subclasses of the real seams, measure in the same run:

* :class:`TimedProvider`: the time spent inside the provider's stream (building the request, HTTP,
  the fake's answer). The agent's own time is a turn's wall time minus that; the first-token overhead
  is (first ``TextDelta`` seen by the caller) minus (first text chunk out of the provider).
* :class:`TimedEngine`: the time spent in the store engine, to show how much of the agent's time is
  durable writes and reads rather than the agent's logic.

Each size runs twice: the default durable store (``synchronous=FULL``: an fsync per commit) and
the same engine without fsync, which shows the agent's cost apart from the disk.

The store is measured in its steady state, as in a daemon that has been running for a while: its
write-ahead log file already has its working size (a scratch conversation grows it first) and each
size's bulk load is checkpointed without truncating the log, so commits write over the log's start
and an fsync has no file-size change to flush. ``--fresh-log`` measures a brand-new data dir instead
(the log truncated after each bulk load and growing with every commit: about 0.15 ms more per
durable commit on this machine's disk, until the log reaches its working size of ~16 MB).

    .venv/bin/python -m bench.agent_turns [--turns 60] [--sizes 10,200,10000] [--fresh-log] [--postgres]

``--postgres`` adds rows for the postgres engine on a throwaway PostgreSQL cluster (loopback, fsync
on), measured in the same run as the embedded rows.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import anyio
import structlog

from agent.core import Agent, TurnRequest
from agent.events import Done, TextDelta
from agent.providers.base import ChatRequest, Provider, ProviderEvent, TextChunk
from agent.providers.openai import OpenAIProvider
from config.settings import LLMSettings, MemorySettings, Settings, StoreSettings
from store import DelegatingEngine, EmbeddedEngine, Engine, Message, Results, Scope, Step, Store

SCOPE = Scope("bench", "bencher")
TEXT = "a line of ordinary chat, about as long as people write them in a messenger"
WARMUP = 5
#: the log size at which SQLite checkpoints (``wal_autocheckpoint`` = 4,000 pages of 4 KiB)
WORKING_LOG_BYTES = 4000 * 4096


class TimedProvider(Provider):
    """Delegates to a real provider; records the time spent inside its stream."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.name = inner.name
        self.reset()

    def reset(self) -> None:
        self.spent = 0.0
        self.first_chunk_wait: float | None = None

    async def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]:
        started = time.perf_counter()
        async for ev in self.inner.stream(request):
            now = time.perf_counter()
            if isinstance(ev, TextChunk) and self.first_chunk_wait is None:
                self.first_chunk_wait = self.spent + (now - started)
            self.spent += now - started
            yield ev  # the time the agent spends between events is not the provider's
            started = time.perf_counter()
        self.spent += time.perf_counter() - started

    async def aclose(self) -> None:
        await self.inner.aclose()


class TimedEngine(DelegatingEngine):
    """Delegates to a real engine; records the time spent in it."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self.spent = 0.0
        self._active = 0
        self._busy_since = 0.0

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        # wall time with at least one engine call in flight: calls may overlap (the history window
        # reads the conversation and its messages at once), and overlap must not count twice
        if self._active == 0:
            self._busy_since = time.perf_counter()
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                self.spent += time.perf_counter() - self._busy_since

    async def batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        with self._timed():
            return await self.inner.batch(scope, steps)


@contextlib.contextmanager
def fake_server() -> Iterator[str]:
    """FakeOpenAI in its own process, so its work never competes with the agent for the GIL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise SystemExit(f"the fake LLM server did not start: {line!r}")
        yield line.split()[1]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


async def warm_log(store: Store, engine: EmbeddedEngine) -> None:
    """Grow the write-ahead log to its working size (the autocheckpoint mark), as a store in use has."""
    scratch = Scope("bench-scratch", "bencher")
    conv = await store.create_conversation(scratch, "scratch", channel="cli")
    wal = anyio.Path(f"{engine.db_path}-wal")
    while (await wal.stat()).st_size < WORKING_LOG_BYTES:
        await store.append_message(
            scratch, Message(conversation_id=conv.sid, role="user", content=TEXT * 20, channel="cli")
        )
    await store.delete_conversation(scratch, conv.sid)


async def fill(store: Store, conversation_id: str, n: int) -> None:
    for i in range(n // 2):
        await store.append_message(
            SCOPE,
            Message(conversation_id=conversation_id, role="user", content=f"{TEXT} #{i}", channel="cli"),
        )
        await store.append_message(
            SCOPE,
            Message(
                conversation_id=conversation_id, role="assistant", content=f"echo: {TEXT} #{i}", channel="cli"
            ),
        )


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(
    agent: Agent, timed: TimedProvider, engine: TimedEngine, conversation_id: str, turns: int
) -> dict[str, list[float]]:
    """Per turn, in ms: own (to Done), full (to the end of the stream: usage and lock release
    included), ttft+ (first-token overhead), store (engine time to the end), provider."""
    out: dict[str, list[float]] = {k: [] for k in ("own", "full", "ttft", "store", "provider")}
    for i in range(turns + WARMUP):
        timed.reset()
        store_before = engine.spent
        req = TurnRequest(SCOPE, "cli", f"{TEXT} (turn {i})", conversation_id=conversation_id)
        started = time.perf_counter()
        first_delta = done_at = None
        async for ev in agent.handle(req):
            if isinstance(ev, TextDelta) and first_delta is None:
                first_delta = time.perf_counter()
            elif isinstance(ev, Done):
                done_at = time.perf_counter()
        ended = time.perf_counter()
        if done_at is None or first_delta is None or timed.first_chunk_wait is None:
            raise SystemExit(f"turn {i} did not complete")
        if i < WARMUP:
            continue
        out["own"].append((done_at - started - timed.spent) * 1000)
        out["full"].append((ended - started - timed.spent) * 1000)
        out["ttft"].append((first_delta - started - timed.first_chunk_wait) * 1000)
        out["store"].append((engine.spent - store_before) * 1000)
        out["provider"].append(timed.spent * 1000)
    return out


COLUMNS = (
    "own p50",
    "own p99",
    "full p50",
    "ttft+ p50",
    "ttft+ p99",
    "store p50",
    "logic p50",
    "provider p50",
)


def row(label: str, size: int, r: dict[str, list[float]]) -> str:
    logic = [f - s for f, s in zip(r["full"], r["store"], strict=True)]
    figures = (
        pct(r["own"], 0.5),
        pct(r["own"], 0.99),
        pct(r["full"], 0.5),
        pct(r["ttft"], 0.5),
        pct(r["ttft"], 0.99),
        pct(r["store"], 0.5),
        pct(logic, 0.5),
        pct(r["provider"], 0.5),
    )
    return f"{label:>8} {size:>8} " + " ".join(
        f"{v:>{len(c)}.2f}" for v, c in zip(figures, COLUMNS, strict=True)
    )


async def run(sizes: list[int], turns: int, fresh_log: bool, postgres_url: str = "") -> None:
    print(f"{turns} turns per row, ms; own = to Done minus provider time; full = to the end of the turn;")
    print("logic = full minus store engine time;", "fresh log" if fresh_log else "steady-state log")
    print(f"{'store':>8} {'messages':>8} " + " ".join(COLUMNS))
    with fake_server() as base_url:
        llm = LLMSettings(base_url=base_url, api_key="bench", model="fake-model", max_retries=0)
        for label in ("fsync", "no-fsync", *(("postgres",) if postgres_url else ())):
            with tempfile.TemporaryDirectory() as tmp:
                # auto-memory extraction runs off the reply path: keep its LLM calls out of the figures
                settings = Settings(
                    llm=llm, memory=MemorySettings(enabled=False), store=StoreSettings(path=Path(tmp))
                )
                embedded = EmbeddedEngine(Path(tmp), fsync_commits=label == "fsync")
                inner: Engine = embedded if label != "postgres" else _postgres(postgres_url)
                engine = TimedEngine(inner)
                timed = TimedProvider(OpenAIProvider(llm))
                async with Store(engine) as store, Agent(settings, store, timed) as agent:
                    if not fresh_log and inner is embedded:
                        await warm_log(store, embedded)
                    for size in sizes:
                        conv = await agent.new_conversation(SCOPE, channel="cli")
                        await fill(store, conv.sid, size)
                        # the bulk load's WAL and its page write-back are not the turns' cost
                        if inner is embedded:
                            await embedded.checkpoint(truncate=fresh_log)
                        await anyio.to_thread.run_sync(os.sync)
                        r = await measure(agent, timed, engine, conv.sid, turns)
                        print(row(label, size, r), flush=True)
                await timed.aclose()


def _postgres(url: str) -> Engine:
    from store.postgres.engine import PostgresEngine  # noqa: PLC0415

    return PostgresEngine(StoreSettings(engine="postgres", url=url, timeout_s=30.0))


def _with_postgres(sizes: list[int], turns: int, fresh_log: bool) -> None:
    """The embedded rows, then the postgres engine on a throwaway cluster (fsync on), in one run."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' cluster helper
    from tests.store.postgres_fixtures import make_cluster, remove_cluster  # noqa: PLC0415

    cluster = make_cluster()
    try:
        print(f"# {cluster.version()}, a throwaway cluster on loopback, fsync on")
        anyio.run(run, sizes, turns, fresh_log, cluster.url())
    finally:
        remove_cluster(cluster)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--sizes", default="10,200,10000")
    parser.add_argument(
        "--fresh-log", action="store_true", help="a brand-new data dir: the log grows with every commit"
    )
    parser.add_argument(
        "--postgres", action="store_true", help="also the postgres engine (a throwaway cluster)"
    )
    args = parser.parse_args()
    print(f"# load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine)")
    # per-turn info logs are for operators; rendering them would be measured as agent time
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.postgres:
        _with_postgres(sizes, args.turns, args.fresh_log)
    else:
        anyio.run(run, sizes, args.turns, args.fresh_log)


if __name__ == "__main__":
    main()
