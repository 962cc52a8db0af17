"""Benchmark of the osis engine over loopback against the embedded engine, measured in the same run.

    .venv/bin/python -m bench.store_osis                    # 10k messages, 500 samples per op
    .venv/bin/python -m bench.store_osis --messages 100000 --samples 1000 --fsync

A real ``hero-agent osis serve`` process on 127.0.0.1 fronts its own embedded data dir; this process
opens a second embedded data dir directly. Both are filled identically (one conversation of
``--messages`` messages, through ``restore_batch``), then the two engines are timed call by call,
alternating, through the public ``Store`` API:

* append    ``Store.messages.append`` to the big conversation
* history   ``Store.messages.history(limit=50)`` of the big conversation (2 calls over the wire: get + list)

Besides wall-clock p50/p99 it prints the CPU time per call (this process, all threads; for osis plus
the server process), which a busy shared machine distorts much less than wall time.

The figure of interest is the added p50 (osis minus embedded), target <= 2 ms per call. By default
both engines run with ``store.fsync_commits = false`` so that disk flush noise does not hide the
protocol's cost; ``--fsync`` measures the durable default.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx
import structlog

from bench.common import free_port, pct, process_cpu
from config import StoreSettings
from store import (
    Conversation,
    EmbeddedEngine,
    Engine,
    Kind,
    Message,
    OsisEngine,
    Record,
    Scope,
    Store,
    to_base36,
)

SCOPE = Scope("bench", "user")
T0 = 1_700_000_000_000
TARGET_ADDED_MS = 2.0
ROOT = Path(__file__).resolve().parents[1]


def records(messages: int) -> list[tuple[Kind, Record]]:
    """One conversation (sid 1) holding ``messages`` messages, shaped like the Store writes them."""
    ctx, user = SCOPE.context, SCOPE.user_id
    conv = Conversation(
        sid=to_base36(1),
        created_at=T0,
        updated_at=T0 + messages,
        title="big",
        message_count=messages,
        last_channel="cli",
        context=ctx,
        user_id=user,
    ).to_record()
    out: list[tuple[Kind, Record]] = [(Kind.CONVERSATION, conv)]
    for i in range(1, messages + 1):
        msg = Message(
            sid=to_base36(i),
            created_at=T0 + i,
            updated_at=T0 + i,
            conversation_id=to_base36(1),
            seq=i,
            role="user" if i % 2 else "assistant",
            content=f"message number {i} " * 4,
            channel="cli",
            timestamp=T0 + i,
            context=ctx,
            user_id=user,
        )
        out.append((Kind.MESSAGE, msg.to_record()))
    return out


async def fill(engine: Engine, items: list[tuple[Kind, Record]]) -> None:
    for start in range(0, len(items), 2000):
        await engine.restore_batch(items[start : start + 2000])


def start_server(data_dir: Path, port: int, fsync: bool) -> subprocess.Popen[bytes]:
    cfg = data_dir / "osis-bench.toml"
    cfg.write_text(f'[store]\npath = "{data_dir / "served"}"\nfsync_commits = {str(fsync).lower()}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERO_AGENT_", "OSIS_"))}
    env["HERO_AGENT_LOGGING__LEVEL"] = "warning"
    cmd = [
        str(Path(sys.executable).with_name("hero-agent")),
        "--config",
        str(cfg),
        "osis",
        "serve",
        "--port",
        str(port),
    ]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)


async def wait_ready(proc: subprocess.Popen[bytes], url: str) -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        with anyio.fail_after(30):
            while True:
                if proc.poll() is not None:
                    raise SystemExit("osis serve exited during start-up")
                try:
                    await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "rpc.discover"})
                    return
                except httpx.TransportError:
                    await anyio.sleep(0.05)


async def alternate(
    samples: int, ops: dict[str, Callable[[], Awaitable[object]]]
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Time the ops call by call, in turn, so that machine load hits every engine alike.

    Returns wall times (ms) per call and this process's CPU ms per call (all threads) per op.
    """
    times: dict[str, list[float]] = {name: [] for name in ops}
    cpu: dict[str, float] = dict.fromkeys(ops, 0.0)
    for i in range(samples + 20):
        for name, op in ops.items():
            cpu_start = time.process_time()
            start = time.perf_counter()
            await op()
            if i >= 20:  # the first rounds warm caches, threads and connections
                times[name].append((time.perf_counter() - start) * 1000)
                cpu[name] += (time.process_time() - cpu_start) * 1000
    return times, {name: total / samples for name, total in cpu.items()}


async def run(messages: int, samples: int, data_dir: Path, fsync: bool) -> int:
    port = free_port()
    proc = start_server(data_dir, port, fsync)
    try:
        await wait_ready(proc, f"http://127.0.0.1:{port}/hero_osis_ai/rpc")
        items = records(messages)
        settings = StoreSettings(engine="osis", url=f"http://127.0.0.1:{port}/hero_osis")
        local = Store(EmbeddedEngine(data_dir / "local", fsync_commits=fsync))
        remote = Store(OsisEngine(settings))
        async with local, remote:
            start = time.perf_counter()
            await fill(local.engine, items)
            await fill(remote.engine, items)
            mode = "fsync per commit" if fsync else "no fsync per commit"
            print(
                f"# osis vs embedded, {messages} messages in the conversation, {mode}, {samples} samples; "
                f"filled in {time.perf_counter() - start:.1f}s",
                flush=True,
            )
            conv = to_base36(1)
            results: dict[str, dict[str, list[float]]] = {}
            cpu: dict[str, dict[str, float]] = {}
            for op in ("append", "history"):
                calls: dict[str, Callable[[], Awaitable[object]]] = {}
                for name, store in (("embedded", local), ("osis", remote)):
                    if op == "append":
                        calls[name] = _append(store, conv)
                    else:
                        calls[name] = _history(store, conv)
                served_before = process_cpu(proc.pid)
                results[op], cpu[op] = await alternate(samples, calls)
                # the server process serves only the osis calls
                cpu[op]["server"] = (process_cpu(proc.pid) - served_before) * 1000 / samples
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return report(results, cpu)


def _append(store: Store, conv: str) -> Callable[[], Awaitable[object]]:
    return lambda: store.messages.append(
        SCOPE,
        Message(
            conversation_id=conv, role="user", content="a benchmark message of some words", channel="cli"
        ),
    )


def _history(store: Store, conv: str) -> Callable[[], Awaitable[object]]:
    return lambda: store.messages.history(SCOPE, conv, limit=50)


def report(results: dict[str, dict[str, list[float]]], cpu: dict[str, dict[str, float]]) -> int:
    print(f"{'op':>8} {'engine':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/call':>12}")
    met = True
    for op, by_engine in results.items():
        for name, values in by_engine.items():
            used = cpu[op][name] + (cpu[op]["server"] if name == "osis" else 0.0)
            print(f"{op:>8} {name:>9} {pct(values, 0.5):>8.3f} {pct(values, 0.99):>8.3f} {used:>12.3f}")
    print(f"\n# added by osis over loopback (target: p50 <= {TARGET_ADDED_MS} ms per call)")
    for op, by_engine in results.items():
        added50 = pct(by_engine["osis"], 0.5) - pct(by_engine["embedded"], 0.5)
        added99 = pct(by_engine["osis"], 0.99) - pct(by_engine["embedded"], 0.99)
        ok = added50 <= TARGET_ADDED_MS
        met &= ok
        print(
            f"{op:>8}  p50 +{added50:.3f} ms  p99 +{added99:.3f} ms  {'met' if ok else 'MISSED'}"
            f"   (cpu: client {cpu[op]['osis']:.3f} + server {cpu[op]['server']:.3f} ms"
            f" vs embedded {cpu[op]['embedded']:.3f} ms)"
        )
    return 0 if met else 1


def main() -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages in the measured conversation")
    parser.add_argument("--samples", type=int, default=500, help="timed calls per operation and engine")
    parser.add_argument("--fsync", action="store_true", help="store.fsync_commits = true on both engines")
    parser.add_argument("--dir", type=Path, help="where the two data dirs go (default: a temporary dir)")
    args = parser.parse_args()
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        return anyio.run(run, args.messages, args.samples, args.dir, args.fsync)
    with tempfile.TemporaryDirectory(prefix="hero-bench-osis-") as tmp:
        return anyio.run(run, args.messages, args.samples, Path(tmp), args.fsync)


if __name__ == "__main__":
    sys.exit(main())
