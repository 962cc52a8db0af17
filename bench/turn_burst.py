"""A burst of turns: N conversations each start one turn at the same instant, with group commit off
(every write batch commits alone, as before) and on, alternated in the same run (off, on, off, on...)
so that both see the same machine.

A real Agent on the embedded store (durable: ``synchronous=FULL``), deployed-like (default tools, INFO
logs rendered as JSON to /dev/null), talks HTTP to ``FakeOpenAI`` in its own process (answering at
once, 4 chunks). Per round it prints:

* **turns/s**: N over the burst's wall time (first request to the last turn's end);
* **ttft p50/p99**: request -> first ``TextDelta``, per turn;
* **writer**: the share of the turns' time to first token during which they were held up by the
  store's writer, summed over turns: for a turn that waited for its opening before it sent its
  request, the writer's side of each of its calls (queued behind the single writer, running,
  committing); for a turn whose early request was used (``agent/turn/early.py``; **early turns**
  counts them), the writer's side of its other calls plus the time from the model's first event to
  its opening's being answered and durable, when that came later (its output was held until then);
  **early wait**: the product's own count of that hold (``hero_turn_early_wait_seconds_total``, the
  loop's delay in relaying included); **writer calls**: the writer's side of every call a turn made
  before its first token, whether it waited for it or not (the writer share before the early
  request); **store call**: the whole engine calls, which adds the event loop's delay in resuming
  the turn once the worker answered (with N turns ready to run, that is CPU contention of the loop);
  a turn's opening is answered before its commit (``Engine.batch_early``), and the time the turn
  then waits at its gate for that commit counts as the writer's too: **commit wait** is that part;
* **loop idle**: the burst seen whole rather than turn by turn: the share of its time to the last
  first token during which the event loop had nothing to run (blocked in its selector). A turn's
  wait for the writer that overlaps other turns' work on the loop costs the burst nothing; idle time
  is what the waits did cost. Split by what was awaited then: **idle, store only** (turns waited for
  store calls and none for the fake LLM: the writer alone held the burst up), **idle, LLM only**,
  and the rest with both in flight;
* **commits, batches/commit**: from the engine's own counters (``/metrics`` shows the same);
* **loop / store run %, cpu wait %**: the share of the burst's wall time the event loop's thread and
  the store's thread ran on a CPU, and waited for one, runnable (the kernel's ``schedstat``); the
  rest they were asleep (waiting for the GIL, the disk, or work); **fake cpu %**: the fake LLM's
  process's CPU time over the burst's wall time (it shares this machine's two cores);
* **floor**: the CPU floor of the burst, N x one turn's CPU time up to its first token (this process,
  all threads; measured in the same round on turns run one at a time): no scheduling of N turns on
  one event loop can bring the last first token in before about that much CPU has been spent.

    .venv/bin/python -m bench.turn_burst [--conversations 200] [--rounds 3] [--modes off,on]
                                         [--chunk-delay-ms 0] [--writer thread|process]
                                         [--early on|off]

``--modes off`` runs on code without group commit too (an older checkout), to compare with it in
alternation. ``--chunk-delay-ms 200`` makes the fake a model that takes 200 ms to its first text (and
as long between chunks), as a remote model does: the writer's wait then meets a longer time to first
token. ``--writer process`` runs the store's connection in its writer process (``[store] writer``, the
daemon's default; the bench's default is the thread, as in earlier figures): the writer's side of a
call is then from its sending to its answer coming in, **store run / cpu wait** are that process's,
and the CPU floor counts its CPU too. ``--early off`` turns the early request off (``[agent]
early_request``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import inspect
import math
import os
import statistics
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import anyio

from agent.core import Agent, TurnRequest
from agent.events import Done, TextDelta
from agent.providers.base import ChatRequest, Provider, ProviderEvent
from agent.providers.openai import OpenAIProvider
from agent.tools.factory import open_tools
from bench.common import (
    WaitedFuture,
    fake_llm_process,
    like_the_daemon,
    pct,
    process_cpu,
    process_sched,
    store_thread_id,
    thread_sched,
)
from config.settings import AgentSettings, LLMSettings, MemorySettings, Settings, StoreSettings
from store import DelegatingEngine, EmbeddedEngine, Results, Scope, Step, Store

if TYPE_CHECKING:
    from store import Durable

#: the early request's module (None in code older than it: no turn goes early)
early_module: ModuleType | None
try:
    from agent.turn import early as early_module
except ImportError:
    early_module = None
EARLY_TASK = early_module.TASK_NAME if early_module is not None else ""

#: the worker's side of the task's last engine call (code older than it: none, 0)
worker_side = getattr(EmbeddedEngine, "last_call_seconds", lambda: 0.0)

SCOPE = Scope("bench", "bencher")
TEXT = "a line of ordinary chat, about as long as people write them in a messenger"


@dataclasses.dataclass(slots=True)
class Account:
    """One turn's store and model times up to its first token (the task running it, and the tasks
    it starts, share it through :data:`_spent`)."""

    #: the engine calls' whole time, the writer's side of it, and of that the wait for a commit
    calls: float = 0.0
    writer: float = 0.0
    commit_wait: float = 0.0
    #: the first token is out: nothing more is counted
    first: bool = False
    #: the writer's side of the turn's opening, and when the opening was answered and durable
    opening: float = 0.0
    opened_at: float = 0.0
    durable_at: float = 0.0
    #: model streams started; whether the first was the turn's early request (sent from the task
    #: ``agent/turn/early.py`` names, while the opening was on its way)
    streams: int = 0
    early: bool = False
    #: when the first model stream's first event came in, and the turn's first token (perf_counter)
    model_first: float = 0.0
    first_token: float = 0.0

    @property
    def went_early(self) -> bool:
        """The turn's first token came from its early request (sent once, not discarded)."""
        return self.early and self.streams == 1 and bool(self.model_first)

    def held(self) -> float:
        """How long the turn's first token was held up by the store's writer. A turn that waited for
        its opening before it sent anything: the writer's side of its calls. A turn whose early
        request was used: the writer's side of its other calls, plus the time from the model's first
        event to the opening's being answered and durable, when that came later (the output is held
        until then; the loop's delay in taking the answer counts too)."""
        if not self.went_early:
            return self.writer
        settled = max(self.opened_at, self.durable_at)
        return self.writer - self.opening + max(0.0, settled - self.model_first)


#: the engine time of the turn running in this context, before its first token
_spent: contextvars.ContextVar[Account | None] = contextvars.ContextVar("spent", default=None)
#: turns run one at a time to measure one turn's CPU time
FLOOR_TURNS = 20


class LoopIdle:
    """The time the event loop sat in its selector with nothing to run, from :meth:`start` to the
    last first token, split by what was in flight then (:meth:`awaiting`): store calls only, turns'
    streams waiting on the LLM server only, or both. Wraps the running loop's selector (an asyncio
    internal: a bench's instrument)."""

    def __init__(self, turns: int) -> None:
        self.on = False
        #: first tokens still to come: the window ends with the last one
        self.firsts = turns
        self.started = self.ended = 0.0
        #: calls in flight, by kind: "store" calls, and "llm" streams awaiting the server's next event
        self.waiting = {"store": 0, "llm": 0}
        self.idle = 0.0
        self.idle_store_only = 0.0
        self.idle_llm_only = 0.0
        selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        self._selector = selector
        self._select = selector.select

        def select(timeout: float | None = None) -> Any:
            started = time.perf_counter()
            try:
                return self._select(timeout)
            finally:
                if self.on:
                    spent = time.perf_counter() - started
                    self.idle += spent
                    store, llm = self.waiting["store"], self.waiting["llm"]
                    if store and not llm:
                        self.idle_store_only += spent
                    elif llm and not store:
                        self.idle_llm_only += spent

        selector.select = select

    def start(self) -> None:
        self.on, self.started = True, time.perf_counter()

    def first_token(self) -> None:
        self.firsts -= 1
        if not self.firsts:
            self.on, self.ended = False, time.perf_counter()

    def share(self, seconds: float) -> float:
        """``seconds`` as a percentage of the window (the start to the last first token)."""
        return 100 * seconds / (self.ended - self.started)

    def close(self) -> None:
        self._selector.select = self._select

    @contextlib.contextmanager
    def awaiting(self, kind: str) -> Iterator[None]:
        self.waiting[kind] += 1
        try:
            yield
        finally:
            self.waiting[kind] -= 1


#: the burst's loop instrument (None outside a burst)
_idle: contextvars.ContextVar[LoopIdle | None] = contextvars.ContextVar("idle", default=None)


def _awaiting(kind: str) -> contextlib.AbstractContextManager[None]:
    idle = _idle.get()
    return idle.awaiting(kind) if idle is not None else contextlib.nullcontext()


class LLMClock(Provider):
    """Delegates to the real provider; while a turn's stream awaits the server's next event, the
    burst's :class:`LoopIdle` counts it in flight."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.name = inner.name

    async def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]:
        account = _spent.get()
        if account is not None and not account.first:
            account.streams += 1
            if account.streams == 1:
                task = asyncio.current_task()
                account.early = task is not None and task.get_name() == EARLY_TASK
        events = aiter(self.inner.stream(request))
        while True:
            with _awaiting("llm"):
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    return
            if account is not None and not account.model_first:
                account.model_first = time.perf_counter()
            yield event

    async def aclose(self) -> None:
        await self.inner.aclose()


class WriterClock(DelegatingEngine):
    """Delegates to the real engine; adds each call's time to the calling turn's account: the whole
    call, and the worker's side of it (queued, running, committing: ``last_call_seconds``), the rest
    being the event loop's delay in resuming the turn once answered."""

    async def batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        account = _spent.get()
        started = time.perf_counter()
        try:
            with _awaiting("store"):
                return await self.inner.batch(scope, steps)
        finally:
            if account is not None and not account.first:  # only until the first token
                account.calls += time.perf_counter() - started
                account.writer += worker_side()

    async def read(self, scope: Scope, steps: Sequence[Step]) -> Results:
        """Reads beside the writes (a turn's recall): on the inner engine's reads' connection, not
        the writer; not counted (the turn's early request waits for them, not the turn's opening)."""
        return await self.inner.read(scope, steps)

    async def batch_early(self, scope: Scope, steps: Sequence[Step]) -> tuple[Results, Durable]:
        """A turn's opening, answered before its commit: the call until the results, plus the time
        the turn then waits at its gate for the commit (all of it the writer's: it is the fsync)."""
        account = _spent.get()
        started = time.perf_counter()
        try:
            with _awaiting("store"):
                results, durable = await self.inner.batch_early(scope, steps)
        finally:
            if account is not None and not account.first:
                now = time.perf_counter()
                account.calls += now - started
                side = worker_side()
                account.writer += side
                account.opening += side
                account.opened_at = now
        if durable is None or account is None:
            return results, durable

        def settled(_: object) -> None:
            account.durable_at = time.perf_counter()

        durable.add_done_callback(settled)

        def waited(seconds: float) -> None:
            if not account.first:
                account.calls += seconds
                account.writer += seconds
                account.opening += seconds
                account.commit_wait += seconds

        return results, WaitedFuture(durable, waited, functools.partial(_awaiting, "store"))


async def one_turn(agent: Agent, cid: str, text: str) -> Turn:
    """One turn, timed to its first token and its end, with its account."""
    account = Account()
    _spent.set(account)
    started = time.perf_counter()
    first = 0.0
    done = False
    async for ev in agent.handle(TurnRequest(SCOPE, "web", text, conversation_id=cid)):
        if isinstance(ev, TextDelta) and not first:
            now = time.perf_counter()
            first = now - started
            account.first = True
            account.first_token = now
            idle = _idle.get()
            if idle is not None:
                idle.first_token()
        done = done or isinstance(ev, Done)
    if not done or not first:
        raise SystemExit("a turn did not complete")
    return Turn(first, time.perf_counter() - started, account)


@dataclasses.dataclass(frozen=True, slots=True)
class Turn:
    """A turn's time to first token and to its end (seconds), and its account."""

    ttft: float
    total: float
    account: Account

    @property
    def held(self) -> float:
        return self.account.held()


async def cpu_per_turn(agent: Agent, cid: str, writer_pid: int | None) -> float:
    """CPU seconds of one turn up to its first token (median of FLOOR_TURNS, one at a time): this
    process's, and the store's writer process's when it has one."""

    def cpu_now() -> float:
        return time.process_time() + (process_sched(writer_pid)[0] if writer_pid is not None else 0.0)

    samples = []
    for i in range(FLOOR_TURNS):
        cpu = cpu_now()
        async for ev in agent.handle(TurnRequest(SCOPE, "web", f"{TEXT} floor {i}", conversation_id=cid)):
            if isinstance(ev, TextDelta):
                samples.append(cpu_now() - cpu)
                cpu = float("inf")  # measured; let the turn finish
    return statistics.median(s for s in samples if s >= 0)


async def burst(
    llm: LLMSettings, fake_pid: int, n: int, group: bool, writer: str = "thread", early: bool = True
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        # the early request is newer code's (older code always waits for the opening)
        settings = Settings(
            llm=llm, memory=MemorySettings(enabled=False), store=StoreSettings(path=Path(tmp))
        )
        if not early:
            settings = dataclasses.replace(settings, agent=AgentSettings(early_request=False))
        # code older than group commit has no switch (and commits each batch alone): same program
        older = "group_commit" not in inspect.signature(EmbeddedEngine).parameters
        # a writer process is a choice of newer code only (older code has the thread)
        options: dict[str, Any] = {"writer": writer} if writer != "thread" else {}
        if not group and not older:
            options["group_commit"] = False
        embedded = EmbeddedEngine(Path(tmp), **options)
        provider = LLMClock(OpenAIProvider(llm))
        async with (
            Store(WriterClock(embedded)) as store,
            open_tools(settings) as tools,
            Agent(settings, store, provider, tools) as agent,
        ):
            scratch = await agent.conversations.new(SCOPE, channel="web")
            writer_pid: int | None = getattr(embedded, "writer_pid", None)
            floor = await cpu_per_turn(agent, scratch.sid, writer_pid) * n
            cids = [(await agent.conversations.new(SCOPE, channel="web")).sid for _ in range(n)]
            stats = embedded.commit_stats() if hasattr(embedded, "commit_stats") else None
            commits, batches = (stats.commits, stats.batches) if stats else (0, 0)
            results: list[Turn] = []
            early_wait = early_module.EARLY_STATS.wait_seconds if early_module is not None else 0.0

            async def run(i: int, cid: str) -> None:
                results.append(await one_turn(agent, cid, f"{TEXT} burst {i}"))

            idle = LoopIdle(n)
            token = _idle.set(idle)
            threads = {"loop": threading.get_native_id()}
            if (store_tid := store_thread_id()) is not None:
                threads["store"] = store_tid

            def sched(name: str, tid: int) -> tuple[float, float]:
                # the writer process in place of the store's thread
                return process_sched(tid) if name == "writer" else thread_sched(tid)

            if writer_pid is not None:
                threads["writer"] = writer_pid
            try:
                before = {name: sched(name, tid) for name, tid in threads.items()}
                fake_before = process_cpu(fake_pid)
                started = time.perf_counter()
                idle.start()
                async with anyio.create_task_group() as tg:
                    for i, cid in enumerate(cids):
                        tg.start_soon(run, i, cid)
                wall = time.perf_counter() - started
                spent = {
                    name: [b - a for a, b in zip(before[name], sched(name, tid), strict=True)]
                    for name, tid in threads.items()
                }
                fake_spent = process_cpu(fake_pid) - fake_before
            finally:
                _idle.reset(token)
                idle.close()
            if stats:
                commits, batches = stats.commits - commits, stats.batches - batches
            if early_module is not None:
                early_wait = early_module.EARLY_STATS.wait_seconds - early_wait
        await provider.aclose()
    ttft = [r.ttft for r in results]
    return {
        "turns/s": n / wall,
        "ttft p50": pct(ttft, 0.5) * 1000,
        "ttft p99": pct(ttft, 0.99) * 1000,
        "writer %": 100 * sum(r.held for r in results) / sum(ttft),
        "early turns": sum(1 for r in results if r.account.went_early),
        "early wait %": 100 * early_wait / sum(ttft),
        "writer calls %": 100 * sum(r.account.writer for r in results) / sum(ttft),
        "commit wait %": 100 * sum(r.account.commit_wait for r in results) / sum(ttft),
        "store call %": 100 * sum(r.account.calls for r in results) / sum(ttft),
        "loop idle %": idle.share(idle.idle),
        "idle store only %": idle.share(idle.idle_store_only),
        "idle LLM only %": idle.share(idle.idle_llm_only),
        "commits": commits,
        "batches/commit": batches / max(1, commits),
        "floor ms": floor * 1000,
        "loop run %": 100 * spent["loop"][0] / wall,
        "loop cpu wait %": 100 * spent["loop"][1] / wall,
        "store run %": 100 * spent.get("store", spent.get("writer", [math.nan]))[0] / wall,
        "store cpu wait %": 100 * spent.get("store", spent.get("writer", [0, math.nan]))[1] / wall,
        "fake cpu %": 100 * fake_spent / wall,
    }


FIELDS = (
    "turns/s",
    "ttft p50",
    "ttft p99",
    "writer %",
    "early turns",
    "early wait %",
    "writer calls %",
    "commit wait %",
    "store call %",
    "loop idle %",
    "idle store only %",
    "idle LLM only %",
    "commits",
    "batches/commit",
    "floor ms",
    "loop run %",
    "loop cpu wait %",
    "store run %",
    "store cpu wait %",
    "fake cpu %",
)


async def main_async(
    n: int, rounds: int, modes: list[bool], chunk_delay_ms: float, writer: str = "thread", early: bool = True
) -> None:
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f}")
    print(
        f"{n} conversations, one turn each, all at once; ms unless named; durable commits; writer: {writer};"
        f" early request: {'on' if early else 'off'}"
    )
    if chunk_delay_ms:
        print(
            f"the fake LLM pauses {chunk_delay_ms:g} ms before each chunk after the first (a model's time to"
            " first token, then its pace): the floor then also counts the work this process does"
            " while turns wait (the store's idle indexing), and ttft / floor is not the target's"
        )
    print(f"{'round':>5} {'group':>6} " + " ".join(f"{f:>14}" for f in FIELDS))
    got: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with fake_llm_process("--chunk-delay", str(chunk_delay_ms / 1000)) as (fake, base_url):
        llm = LLMSettings(base_url=base_url, api_key="bench", model="fake-model", max_retries=0)
        for rnd in range(rounds):
            for group in modes:
                r = await burst(llm, fake.pid, n, group, writer, early)
                got[group].append(r)
                cells = " ".join(f"{r[f]:>14.2f}" for f in FIELDS)
                print(f"{rnd:>5} {'on' if group else 'off':>6} {cells}", flush=True)
    print("medians:")
    for group in modes:
        med = {f: statistics.median(r[f] for r in got[group]) for f in FIELDS}
        print(f"  group {'on ' if group else 'off'} " + " ".join(f"{f}={med[f]:.2f}" for f in FIELDS))
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}")
    if len(modes) < 2:
        return
    pairs = list(zip(got[False], got[True], strict=True))
    speed = statistics.median(on["turns/s"] / off["turns/s"] for off, on in pairs)
    p99 = statistics.median(on["ttft p99"] / off["ttft p99"] for off, on in pairs)
    floor = statistics.median(on["ttft p99"] / on["floor ms"] for _, on in pairs)
    share = statistics.median(on["writer %"] for _, on in pairs)
    on_store = statistics.median(on["idle store only %"] for _, on in pairs)
    print(f"paired ratios (on/off, median of {len(pairs)}): turns/s x{speed:.2f}, ttft p99 x{p99:.2f}")
    print(f"group on: ttft p99 / CPU floor = {floor:.2f} (target <= 1.5)")
    # the "<= 1/3 of today's figure" is against the code it was filed on, which this bench
    # cannot run (its APIs differ): bench.web_load runs there (docs/performance.md, Bursts)
    print(f"group on: ttft p99 / off's = {p99:.2f} (group commit's own part; not the issue's 1/3)")
    print(f"group on: writer {share:.1f}% of the time to first token (target < 10)")
    print(f"group on: the loop idle while turns waited on the store and none on the LLM: {on_store:.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--modes", default="off,on", help="group commit off, on or both (in that order, each round)"
    )
    parser.add_argument(
        "--chunk-delay-ms",
        type=float,
        default=0.0,
        help="the fake LLM's pause before each chunk after the first (default 0: it answers at once)",
    )
    parser.add_argument(
        "--writer",
        choices=("thread", "process"),
        default="thread",
        help="who runs the embedded store's connection ([store] writer; default thread)",
    )
    parser.add_argument(
        "--early",
        choices=("on", "off"),
        default="on",
        help="a turn's early request ([agent] early_request; default on, as the daemon's)",
    )
    args = parser.parse_args()
    like_the_daemon()
    modes = [m.strip() == "on" for m in args.modes.split(",")]
    anyio.run(
        main_async,
        args.conversations,
        args.rounds,
        modes,
        args.chunk_delay_ms,
        args.writer,
        args.early == "on",
    )


if __name__ == "__main__":
    main()
