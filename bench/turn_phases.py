"""Where one turn's wall time goes, phase by phase, at the engine seam.

The same set-up as ``bench/agent_turns.py`` (a real Agent on the durable embedded store, default
tools, INFO logs as JSON to /dev/null, ``FakeOpenAI`` in its own process answering at once, the
store's log at its working size, the daemon's switch interval), with two instruments: a delegating
engine that stamps the opening batch (sent, answered early) and the closing batch (sent, returned),
and a delegating provider that stamps the model's first text.
Per turn, p50 over ``--turns`` turns at ``--size`` messages:

* **to the opening**: from the request to the opening batch handed to the store;
* **opening**: until its early answer (the hop to the worker and back, its SQLite statements);
* **prompt, model, stream**: from that answer to the closing batch sent (the prompt, the request,
  the fake's time, the stream's parsing; the opening's fsync runs meanwhile);
* **closing batch**: its statements, the COMMIT's fsync and the hops;
* **to Done** and **Done to the end of the stream**;

and, after the turns, the round trip of a store call that does next to nothing (``ping``: one
``SELECT 1`` on the worker thread): the price of one hand-off to the store's thread and back, which a
turn pays at its opening and at its closing. Then the CPU time per turn of the event loop's thread
and of the store's thread, user and system (``/proc/self/task/<tid>/stat``, over the measured turns);
how long each of the two threads waited for a CPU per turn, runnable but not running (the kernel's
``/proc/self/task/<tid>/schedstat``: the fake LLM's process shares this machine's cores); the
passes through the event loop per turn (the loop runs on a selector that counts its waits, a
public argument of ``asyncio.SelectorEventLoop``); and how long the opening's commit took to become
durable after its early answer, as the event loop sees it (p10, p50, p90), with the share of turns
whose closing batch was sent before it (none: the turn's request, the fake's answer and the stream
took longer than the fsync), the share whose first text from the model was parsed before it (the
turn's gate then holds that text until the commit is durable) and how long the first text took from
its parsing to the caller (p50, p90). Last, the disk alone for comparison: bare sqlite3 one-row
transactions (WAL, ``synchronous=FULL``, the log at its working size, 2 ms apart) in a database of
their own in the same directory (``bench.common.bare_commits``; p10, p50, p90, p99).

``--pin`` runs the fake LLM on the last CPU and, from the first measured turn, the event loop's
thread on the first (the store's thread may run on any), as if the model ran on another machine: a
diagnostic of what sharing the cores with the fake costs, not the headline's set-up.

    .venv/bin/python -m bench.turn_phases [--turns 300] [--size 200] [--pin]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import selectors
import statistics
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import anyio.to_thread

from agent.core import Agent, TurnRequest
from agent.events import Done, TextDelta
from agent.providers.base import ChatRequest, Provider, ProviderEvent, TextChunk
from agent.providers.openai import OpenAIProvider
from agent.tools.factory import open_tools
from bench.agent_turns import SCOPE, fill, warm_log
from bench.common import (
    bare_commits,
    fake_llm,
    like_the_daemon,
    pct,
    stat_cpu,
    store_thread_id,
    thread_sched,
)
from config.settings import (
    LLMSettings,
    MemorySettings,
    Settings,
    StoreSettings,
    ToolsSettings,
)
from store import DelegatingEngine, Durable, EmbeddedEngine, Engine, Results, Scope, Step, Store

PHASES = (
    "to the opening",
    "opening (to its early answer)",
    "prompt, model, stream",
    "closing batch",
    "closing returned -> Done",
    "Done -> end of stream",
    "whole turn (the fake's time included)",
)
WARMUP = 20
#: store calls that do next to nothing (``SELECT 1``): what the hand-off to the worker thread costs
PINGS = 1000


def thread_cpu(native_id: int) -> tuple[float, float]:
    """A thread's user and system CPU time so far, seconds (Linux)."""
    return stat_cpu(Path(f"/proc/self/task/{native_id}/stat"))


#: the disk alone: bare commits timed after the turns, 2 ms apart
BARE_COMMITS = 1000


class CountingSelector(selectors.DefaultSelector):
    """The loop's selector, counting its waits: one per pass through the event loop."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.waits += 1
        return super().select(timeout)


SELECTOR = CountingSelector()


class FirstChunk(Provider):
    """The real provider; the time its stream yields the model's first text stamped (parsed, before
    the turn's gate)."""

    def __init__(self, inner: Provider, at: dict[str, float]) -> None:
        self.inner = inner
        self.name = inner.name
        self.at = at

    async def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]:
        async for ev in self.inner.stream(request):
            if isinstance(ev, TextChunk) and "first chunk" not in self.at:
                self.at["first chunk"] = time.perf_counter()
            yield ev

    async def aclose(self) -> None:
        await self.inner.aclose()


class Stamps(DelegatingEngine):
    """The real engine; the opening's and the closing's times stamped, and the opening's durability."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self.at: dict[str, float] = {}

    async def batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        sent = time.perf_counter()
        results = await self.inner.batch(scope, steps)
        if any(type(s).__name__ == "ReleaseStep" for s in steps):  # the closing releases the lease
            self.at["closing sent"], self.at["closing returned"] = sent, time.perf_counter()
        return results

    async def batch_early(self, scope: Scope, steps: Sequence[Step]) -> tuple[Results, Durable]:
        self.at["opening sent"] = time.perf_counter()
        answer = await self.inner.batch_early(scope, steps)
        self.at["opening answered"] = time.perf_counter()
        self.at.pop("opening durable", None)
        durable = answer[1]
        if durable is not None:
            durable.add_done_callback(lambda _: self.at.__setitem__("opening durable", time.perf_counter()))
        return answer


async def run(turns: int, size: int, pin: bool) -> None:
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f}")
    last_cpu = max(os.sched_getaffinity(0))
    if pin and last_cpu == 0:
        raise SystemExit("--pin needs two CPUs")
    with fake_llm(cpus={last_cpu} if pin else None) as base_url, tempfile.TemporaryDirectory() as tmp:
        llm = LLMSettings(base_url=base_url, api_key="bench", model="fake-model", max_retries=0)
        settings = Settings(
            llm=llm,
            memory=MemorySettings(enabled=False),
            store=StoreSettings(path=Path(tmp)),
            tools=ToolsSettings(),
        )
        embedded = EmbeddedEngine(Path(tmp))
        stamps = Stamps(embedded)
        provider = OpenAIProvider(llm)
        async with (
            Store(stamps) as store,
            open_tools(settings) as tools,
            Agent(settings, store, FirstChunk(provider, stamps.at), tools) as agent,
        ):
            await warm_log(store, embedded)
            conv = await agent.conversations.new(SCOPE, channel="cli")
            await fill(store, conv.sid, size)
            await embedded.checkpoint(truncate=False)
            rows: list[tuple[float, ...]] = []
            durable_after: list[float] = []  # the opening's early answer to its durability, s
            durable_late = 0  # turns whose closing was sent before their opening was durable
            held: list[float] = []  # the model's first text parsed -> out of the turn, s
            gated = 0  # turns whose first text was parsed before their opening was durable
            store_tid = store_thread_id()
            if store_tid is None:
                raise SystemExit("expected one store thread (hero-agent-store:...)")
            threads = {"event loop": threading.get_native_id(), "store": store_tid}
            cpu: dict[str, tuple[float, float]] = {}
            queued: dict[str, float] = {}
            waits = 0
            for i in range(turns + WARMUP):
                if i == WARMUP:
                    if pin:  # this thread only; the store's was started before, on any CPU
                        os.sched_setaffinity(0, {0})
                    cpu = {name: thread_cpu(tid) for name, tid in threads.items()}
                    queued = {name: thread_sched(tid)[1] for name, tid in threads.items()}
                    waits = SELECTOR.waits
                stamps.at.pop("first chunk", None)
                started = time.perf_counter()
                done_at = text_at = 0.0
                async for ev in agent.handle(
                    TurnRequest(SCOPE, "cli", f"turn {i}", conversation_id=conv.sid)
                ):
                    if isinstance(ev, Done):
                        done_at = time.perf_counter()
                    elif isinstance(ev, TextDelta) and not text_at:
                        text_at = time.perf_counter()
                ended = time.perf_counter()
                at = stamps.at
                if i >= WARMUP:
                    durable_at = at.get("opening durable", at["closing sent"])
                    durable_after.append(durable_at - at["opening answered"])
                    durable_late += durable_at >= at["closing sent"]
                    held.append(text_at - at["first chunk"])
                    gated += durable_at > at["first chunk"]
                    rows.append(
                        (
                            at["opening sent"] - started,
                            at["opening answered"] - at["opening sent"],
                            at["closing sent"] - at["opening answered"],
                            at["closing returned"] - at["closing sent"],
                            done_at - at["closing returned"],
                            ended - done_at,
                            ended - started,
                        )
                    )
            passes = (SELECTOR.waits - waits) / turns
            queued = {n: (thread_sched(tid)[1] - queued[n]) / turns * 1000 for n, tid in threads.items()}
            cpu_per_turn = {
                name: tuple((b - a) / turns * 1000 for a, b in zip(cpu[name], thread_cpu(tid), strict=True))
                for name, tid in threads.items()
            }
            bare = await anyio.to_thread.run_sync(
                lambda: bare_commits(Path(tmp) / "bare.db", BARE_COMMITS, warm=True, pause_s=0.002)
            )
            # the hand-off to the store's worker thread and back, with next to nothing to run
            pings: list[float] = []
            for _ in range(PINGS):
                sent = time.perf_counter()
                await embedded.ping()
                pings.append(time.perf_counter() - sent)
        await provider.aclose()
    print(f"{turns} turns at {size} messages, durable store; p50 per phase, ms:")
    for n, name in enumerate(PHASES):
        print(f"  {name:40} {statistics.median(r[n] for r in rows) * 1000:7.3f}")
    print(f"  {'a store call doing nothing (ping)':40} {statistics.median(pings) * 1000:7.3f}")
    print("CPU per turn by thread, ms (user, system):")
    for name, (user, system) in cpu_per_turn.items():
        print(f"  {name + ' thread':40} {user:7.3f} {system:7.3f}")
    print(
        "waiting for a CPU (runnable, not running) per turn, ms: "
        + ", ".join(f"{name} thread {ms:.3f}" for name, ms in queued.items())
        + (" (the fake on its own CPU, the loop's thread on another)" if pin else "")
    )
    print(f"passes through the event loop per turn: {passes:.1f}")
    spread = ", ".join(f"p{int(q * 100)} {pct(durable_after, q) * 1000:.3f} ms" for q in (0.1, 0.5, 0.9))
    print(
        f"the opening durable (seen by the event loop) after its early answer: {spread}; "
        f"closing sent before it: {durable_late / turns * 100:.1f}% of turns"
    )
    gate = ", ".join(f"p{int(q * 100)} {pct(held, q) * 1000:.3f} ms" for q in (0.5, 0.9))
    print(
        f"the model's first text parsed before the opening was durable: {gated / turns * 100:.1f}% of "
        f"turns; from its parsing to the caller (its gate included): {gate}"
    )
    spread = ", ".join(f"p{int(q * 100)} {pct(bare, q) * 1000:.3f} ms" for q in (0.1, 0.5, 0.9, 0.99))
    print(f"the disk alone, a bare sqlite3 one-row transaction (WAL, synchronous=FULL): {spread}")
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--pin", action="store_true", help="the fake LLM and the event loop on CPUs apart")
    args = parser.parse_args()
    like_the_daemon()
    anyio.run(
        run,
        args.turns,
        args.size,
        args.pin,
        backend_options={"loop_factory": lambda: asyncio.SelectorEventLoop(SELECTOR)},
    )


if __name__ == "__main__":
    main()
