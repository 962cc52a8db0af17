"""The agent's own cost per turn, with the LLM taken out -- and nothing else.

A real Agent on the embedded store, deployed-like (the default built-in tools sent with every
request, structlog at INFO rendering JSON as the daemon does, to /dev/null), talks HTTP to
``FakeOpenAI`` in its own process, answering at once. The headline:

* **own**: a turn's wall time from the request to the end of its stream (the turn's last commit:
  the final message, its usage entries and the lease's release), minus the fake LLM's OWN time for
  that exchange, which the fake measures itself from reading the request to writing its last byte
  and reports at ``GET /v1/_fake/exchanges``. Building the request, encoding it, the HTTP client and
  parsing the SSE stream are ours, and counted.

Beside it, as before (the earlier headline, kept for comparison), with two instruments that are
plain delegating subclasses of the real seams:

* **to Done**: wall time until ``Done`` minus the time spent inside the provider's stream
  (:class:`TimedProvider`: this subtracts our request building and stream parsing too);
* **ttft+**: first ``TextDelta`` seen by the caller minus the provider's wait for its first chunk;
* **store**: the time spent in the store engine (:class:`TimedEngine`);
* **cpu**: the CPU time of this process (the event loop and the store's worker thread) per turn,
  which a loaded machine inflates far less than wall time: the figure to compare code by; with
  ``--writer process`` the store's writer process's too;
* **gc max**: the longest garbage collection pause during the row's turns. The collector is frozen
  after start-up as the daemon does (``agent/gcpause.py``); ``--no-gc-freeze`` leaves it as it was.

Each size runs twice: the default durable store (``synchronous=FULL``: an fsync per commit) and
the same engine without fsync, which shows the agent's cost apart from the disk.

The store is measured in its steady state, as in a daemon that has been running for a while: its
write-ahead log file already has its working size (a scratch conversation grows it first) and each
size's bulk load is checkpointed without truncating the log, so commits write over the log's start
and an fsync has no file-size change to flush. ``--fresh-log`` measures a brand-new data dir instead
(the log truncated after each bulk load and growing with every commit: about 0.15 ms more per
durable commit on this machine's disk, until the log reaches its working size of ~16 MB).

    .venv/bin/python -m bench.agent_turns [--turns 100] [--sizes 10,200,10000] [--fresh-log]
                                          [--log-level warning] [--no-tools] [--fsync-only] [--postgres]
                                          [--no-gc-freeze]

It prints the 1-minute load average at its start and end (this machine is shared: a figure taken
above 0.5 is a loaded one), the machine's speed then (a fixed pure-Python loop,
``bench.common.cpu_probe``: the same code gives a higher own time when that loop is slower) and how
many TCP connections the turns used (connection reuse).
``--postgres`` adds rows for the postgres engine on a throwaway PostgreSQL cluster (loopback, fsync
on), measured in the same run as the embedded rows, and whether issue 13's target is met (postgres own
p50 <= the durable embedded own p50 + 2 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import anyio
import httpx

from agent.core import Agent, TurnRequest
from agent.events import Done, TextDelta
from agent.gcpause import GC_STATS, freeze_after_startup
from agent.providers.base import ChatRequest, Provider, ProviderEvent, TextChunk
from agent.providers.openai import OpenAIProvider
from agent.tools.factory import open_tools
from bench.common import WaitedFuture, cpu_probe, fake_llm, like_the_daemon, pct, process_sched
from config.settings import (
    LLMSettings,
    MemorySettings,
    Settings,
    StoreSettings,
    ToolsSettings,
)
from store import (
    DelegatingEngine,
    Durable,
    EmbeddedEngine,
    Engine,
    Message,
    Results,
    Scope,
    Step,
    Store,
)

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

    async def batch_early(self, scope: Scope, steps: Sequence[Step]) -> tuple[Results, Durable]:
        """The engine's early answer (a turn's opening), timed to the results; the time the turn then
        waits at its gate for the commit counts too."""
        with self._timed():
            results, durable = await self.inner.batch_early(scope, steps)
        if durable is None:
            return results, None
        return results, WaitedFuture(durable, self._waited)

    def _waited(self, seconds: float) -> None:
        self.spent += seconds


async def warm_log(store: Store, engine: EmbeddedEngine) -> None:
    """Grow the write-ahead log to its working size (the autocheckpoint mark), as a store in use has."""
    scratch = Scope("bench-scratch", "bencher")
    conv = await store.conversations.create(scratch, "scratch", channel="cli")
    wal = anyio.Path(f"{engine.db_path}-wal")
    while (await wal.stat()).st_size < WORKING_LOG_BYTES:
        await store.messages.append(
            scratch, Message(conversation_id=conv.sid, role="user", content=TEXT * 20, channel="cli")
        )
    await store.conversations.delete(scratch, conv.sid)


async def fill(store: Store, conversation_id: str, n: int) -> None:
    for i in range(n // 2):
        await store.messages.append(
            SCOPE,
            Message(conversation_id=conversation_id, role="user", content=f"{TEXT} #{i}", channel="cli"),
        )
        await store.messages.append(
            SCOPE,
            Message(
                conversation_id=conversation_id, role="assistant", content=f"echo: {TEXT} #{i}", channel="cli"
            ),
        )


#: ``run``'s leading arguments: sizes, turns, fresh log, tools on, fsyncs, gc freeze
Options = tuple[list[int], int, bool, bool, list[bool], bool]


def _cpu_of(pid: int | None) -> Callable[[], float]:
    """The on-CPU seconds of the store's writer process so far (0 without one)."""
    return (lambda: process_sched(pid)[0]) if pid is not None else (lambda: 0.0)


async def measure(
    agent: Agent,
    timed: TimedProvider,
    engine: TimedEngine,
    conversation_id: str,
    turns: int,
    tag: str,
    writer_cpu: Callable[[], float] = lambda: 0.0,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per turn, in ms: wall (to the end of the stream), done (to Done minus provider time), ttft+,
    store (engine time), provider; and the text of each measured turn's request -> its wall time."""
    out: dict[str, list[float]] = {k: [] for k in ("done", "ttft", "store", "provider", "cpu")}
    walls: dict[str, float] = {}
    for i in range(turns + WARMUP):
        timed.reset()
        store_before = engine.spent
        text = f"{TEXT} ({tag} turn {i})"
        req = TurnRequest(SCOPE, "cli", text, conversation_id=conversation_id)
        cpu_started = time.process_time() + writer_cpu()
        started = time.perf_counter()
        first_delta = done_at = None
        async for ev in agent.handle(req):
            if isinstance(ev, TextDelta) and first_delta is None:
                first_delta = time.perf_counter()
            elif isinstance(ev, Done):
                done_at = time.perf_counter()
        ended = time.perf_counter()
        cpu = time.process_time() + writer_cpu() - cpu_started
        if done_at is None or first_delta is None or timed.first_chunk_wait is None:
            raise SystemExit(f"turn {i} did not complete")
        if i < WARMUP:
            continue
        walls[text] = (ended - started) * 1000
        out["done"].append((done_at - started - timed.spent) * 1000)
        out["ttft"].append((first_delta - started - timed.first_chunk_wait) * 1000)
        out["store"].append((engine.spent - store_before) * 1000)
        out["provider"].append(timed.spent * 1000)
        out["cpu"].append(cpu * 1000)
    return out, walls


async def fake_exchanges(base_url: str) -> list[dict[str, object]]:
    """What the fake measured of itself, per exchange (read after the turns: not in their time)."""
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"{base_url}/_fake/exchanges")
        resp.raise_for_status()
        data: list[dict[str, object]] = resp.json()
        return data


def own_times(walls: dict[str, float], exchanges: list[dict[str, object]]) -> tuple[list[float], list[float]]:
    """Each turn's wall time minus the fake's own time for its exchange (matched by the request's
    user text, unique per turn); and those fake times."""
    fake = {str(e["user"]): float(str(e["ms"])) for e in exchanges}
    missing = [t for t in walls if t not in fake]
    if missing:
        raise SystemExit(f"{len(missing)} turns have no exchange at the fake LLM")
    return [w - fake[t] for t, w in walls.items()], [fake[t] for t in walls]


COLUMNS = (
    "own p50",
    "own p99",
    "toDone p50",
    "toDone p99",
    "ttft+ p50",
    "store p50",
    "fake p50",
    "cpu p50",
    "gc max",
    "conns",
)


def row(label: str, size: int, r: dict[str, list[float]], conns: int) -> str:
    """One table row; ``gc max``: the longest garbage collection pause during the row's turns."""
    figures = (
        pct(r["own"], 0.5),
        pct(r["own"], 0.99),
        pct(r["done"], 0.5),
        pct(r["done"], 0.99),
        pct(r["ttft"], 0.5),
        pct(r["store"], 0.5),
        pct(r["fake"], 0.5),
        pct(r["cpu"], 0.5),
        max(r["gc"]),
    )
    cells = [f"{v:>{len(c)}.2f}" for v, c in zip(figures, COLUMNS, strict=False)]
    return f"{label:>8} {size:>8} " + " ".join([*cells, f"{conns:>{len(COLUMNS[-1])}}"])


def load_average() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def flatness(rows: dict[tuple[str, int], dict[str, list[float]]]) -> None:
    """max/min across sizes of own p50 and p99 per store kind ("flat": <= 1.5 and <= 2)."""
    for label in sorted({k[0] for k in rows}):
        mine = [r for k, r in rows.items() if k[0] == label]
        if len(mine) < 2:
            continue
        p50 = [pct(r["own"], 0.5) for r in mine]
        p99 = [pct(r["own"], 0.99) for r in mine]
        print(f"flatness {label}: own p50 max/min {max(p50) / min(p50):.2f}, p99 {max(p99) / min(p99):.2f}")


async def run(
    sizes: list[int],
    turns: int,
    fresh_log: bool,
    tools_on: bool,
    fsyncs: list[bool],
    gc_freeze: bool,
    postgres_url: str = "",
    writer: str = "thread",
) -> None:
    print(f"load average (1 min) at start: {load_average()}")
    print(f"a fixed pure-Python loop (bench.common.cpu_probe): {cpu_probe():.0f} us, best of 5")
    print(f"{turns} turns per row, ms; own = to the end of the turn minus the fake LLM's own time;")
    print("toDone = to Done minus the provider's time (the earlier headline); conns = TCP connections used;")
    print(
        "tools",
        "on" if tools_on else "off",
        "|",
        "fresh log" if fresh_log else "steady-state log",
        "|",
        "gc frozen after start-up" if gc_freeze else "gc not frozen",
        "|",
        f"switch interval {sys.getswitchinterval() * 1000:g} ms",
    )
    print(f"{'store':>8} {'messages':>8} " + " ".join(COLUMNS))
    rows: dict[tuple[str, int], dict[str, list[float]]] = {}
    with fake_llm() as base_url:
        llm = LLMSettings(base_url=base_url, api_key="bench", model="fake-model", max_retries=0)
        tools = (
            ToolsSettings()
            if tools_on
            else ToolsSettings(memory=False, datetime=False, search_conversations=False, http_fetch=False)
        )
        labels = ["fsync" if fsync else "no-fsync" for fsync in fsyncs]
        for label in (*labels, *(("postgres",) if postgres_url else ())):
            with tempfile.TemporaryDirectory() as tmp:
                # auto-memory extraction runs off the reply path: keep its LLM calls out of the figures
                settings = Settings(
                    llm=llm,
                    memory=MemorySettings(enabled=False),
                    store=StoreSettings(path=Path(tmp)),
                    tools=tools,
                )
                embedded = EmbeddedEngine(Path(tmp), fsync_commits=label == "fsync", writer=writer)
                inner: Engine = embedded if label != "postgres" else _postgres(postgres_url)
                engine = TimedEngine(inner)
                timed = TimedProvider(OpenAIProvider(llm))
                async with (
                    Store(engine) as store,
                    open_tools(settings) as registry,
                    Agent(settings, store, timed, registry) as agent,
                ):
                    if not fresh_log and inner is embedded:
                        await warm_log(store, embedded)
                    # as the daemon does once its channels are up (agent/gcpause.py)
                    GC_STATS.install()
                    if gc_freeze:
                        freeze_after_startup()
                    for size in sizes:
                        conv = await agent.conversations.new(SCOPE, channel="cli")
                        await fill(store, conv.sid, size)
                        # the bulk load's WAL and its page write-back are not the turns' cost
                        if inner is embedded:
                            await embedded.checkpoint(truncate=fresh_log)
                        await anyio.to_thread.run_sync(os.sync)
                        GC_STATS.max_pause_s[:] = [0.0, 0.0, 0.0]  # the row's own longest pause
                        pid = embedded.writer_pid if label != "postgres" else None
                        r, walls = await measure(
                            agent, timed, engine, conv.sid, turns, f"{label} {size}", _cpu_of(pid)
                        )
                        r["gc"] = [p * 1000 for p in GC_STATS.max_pause_s]
                        exchanges = await fake_exchanges(base_url)
                        r["own"], r["fake"] = own_times(walls, exchanges)
                        conns = len({str(e["peer"]) for e in exchanges if str(e["user"]) in walls})
                        rows[(label, size)] = r
                        print(row(label, size, r, conns), flush=True)
                await timed.aclose()
    flatness(rows)
    postgres_target(rows)
    print(f"load average (1 min) at end: {load_average()}")
    print(f"a fixed pure-Python loop (bench.common.cpu_probe): {cpu_probe():.0f} us, best of 5")


def postgres_target(rows: dict[tuple[str, int], dict[str, list[float]]]) -> None:
    """Issue 13's target, per size: the postgres own p50 at most the durable embedded one + 2 ms."""
    for (label, size), r in sorted(rows.items()):
        embedded = rows.get(("fsync", size))
        if label != "postgres" or embedded is None:
            continue
        pg, emb = pct(r["own"], 0.5), pct(embedded["own"], 0.5)
        verdict = "met" if pg <= emb + 2.0 else "MISSED"
        print(f"target at {size} messages: postgres own p50 {pg:.2f} <= embedded {emb:.2f} + 2 ms: {verdict}")


def _postgres(url: str) -> Engine:
    from store.postgres.engine import PostgresEngine  # noqa: PLC0415

    return PostgresEngine(StoreSettings(engine="postgres", url=url, timeout_s=30.0))


def _with_postgres(options: Options, writer: str) -> None:
    """The embedded rows, then the postgres engine on a throwaway cluster (fsync on), in one run."""
    from tests.store.postgres_fixtures import make_cluster, remove_cluster  # noqa: PLC0415

    cluster = make_cluster()
    try:
        print(f"# {cluster.version()}, a throwaway cluster on loopback, fsync on")
        anyio.run(run, *options, cluster.url(), writer)
    finally:
        remove_cluster(cluster)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--sizes", default="10,200,10000")
    parser.add_argument(
        "--fresh-log", action="store_true", help="a brand-new data dir: the log grows with every commit"
    )
    parser.add_argument("--log-level", default="info", help="as the daemon's [logging] level (default info)")
    parser.add_argument("--no-tools", action="store_true", help="send no tools (the earlier setting)")
    parser.add_argument("--fsync-only", action="store_true", help="only the durable store (no no-fsync rows)")
    parser.add_argument(
        "--no-gc-freeze", action="store_true", help="skip the daemon's gc.freeze() after start-up"
    )
    parser.add_argument(
        "--postgres", action="store_true", help="also the postgres engine (a throwaway cluster)"
    )
    parser.add_argument(
        "--writer",
        choices=("thread", "process"),
        default="thread",
        help="who runs the embedded store's connection ([store] writer; default thread)",
    )
    args = parser.parse_args()
    like_the_daemon(args.log_level)
    fsyncs = [True] if args.fsync_only else [True, False]
    sizes = [int(s) for s in args.sizes.split(",")]
    options: Options = (sizes, args.turns, args.fresh_log, not args.no_tools, fsyncs, not args.no_gc_freeze)
    if args.postgres:
        _with_postgres(options, args.writer)
    else:
        anyio.run(run, *options, "", args.writer)


if __name__ == "__main__":
    main()
