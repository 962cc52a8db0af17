"""Benchmark of the embedded store: per-operation latency as the store grows from 1k to 1M messages.

    .venv/bin/python -m bench.store_growth                      # sizes 1k, 10k, 100k, 1M
    .venv/bin/python -m bench.store_growth --quick              # 1k, 10k, 100k and fewer samples
    .venv/bin/python -m bench.store_growth --sizes 1000,50000 --samples 300
    .venv/bin/python -m bench.store_growth --no-fsync           # store.fsync_commits = false
    .venv/bin/python -m bench.store_growth --quick --with-osis  # then bench/store_osis.py (osis vs embedded)
    .venv/bin/python -m bench.store_growth --engine postgres    # a throwaway PostgreSQL cluster (fsync on)
    .venv/bin/python -m bench.store_growth --engine postgres --url postgresql://me@db:5432/bench

One data dir, grown in steps. Before any message: one user with 10,000 conversations and another with
5,000 memories. Messages then fill a "big" conversation up to 100,000 and spread over the other
conversations beyond that, so at 1M one conversation holds 100k messages and the rest are spread.

Filling uses ``EmbeddedEngine.restore_batch`` (the import path: thousands of records per
transaction) with records shaped exactly like the ones the Store writes (sid, scope, timestamps,
gap-free seq per conversation, message_count kept right by re-restoring the touched conversations).
On postgres the same records go in by ``COPY`` (``bench/pg_fill.py``: ~1M messages in a couple of
minutes, where the row-by-row import path took a quarter of an hour), and the engine's invariants
(message_count, gap-free seq, sid counters) are checked after every fill.
The measured operations go through the public ``Store`` API, one at a time, like the agent calls them:

* append        ``Store.messages.append`` to a random conversation (a durable commit each: fsync)
* history       ``Store.messages.history(limit=50)`` of the big conversation (100k messages at >= 100k)
* list          ``Store.conversations.list(limit=50)`` of the user with 10k conversations
* search        ``Store.memories.search`` (2 words) over the user's 5k memories
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import structlog

from bench.common import ROOT, bare_commits, pct
from bench.pg_fill import PgLoader, check_invariants, commit_baseline, during, maintenance
from config.settings import StoreSettings
from store import (
    Conversation,
    EmbeddedEngine,
    Engine,
    Kind,
    Memory,
    Message,
    Record,
    Scope,
    Store,
    memory_hash,
    to_base36,
)

USER = Scope("bench", "user")
MEMO = Scope("bench", "memo")
CONVERSATIONS = 10_000
MEMORIES = 5_000
BIG_CAP = 100_000
BATCH = 5_000
T0 = 1_700_000_000_000
TARGETS = {"append": (1.0, 5.0), "history": (5.0, None), "list": (10.0, None)}
#: the postgres engine's targets (issue 13): loopback, durable commits
PG_TARGETS = {"append": (1.5, 6.0), "history": (3.0, None)}

rng = random.Random(7)
VOCAB = [
    f"{a}{b}"
    for a in ("ka", "lo", "mi", "nu", "pe", "ro", "su", "ti", "va", "ze")
    for b in (
        "bar",
        "cen",
        "dol",
        "fim",
        "gor",
        "hus",
        "jat",
        "kel",
        "lim",
        "mor",
        "nap",
        "pid",
        "quo",
        "ret",
        "sav",
        "tun",
        "vek",
        "wol",
        "yax",
        "zif",
    )
]


def words(n: int) -> str:
    return " ".join(rng.choices(VOCAB, k=n))


class Filler:
    """Generates valid records and writes them in big restore batches."""

    def __init__(self, sink: Callable[[list[tuple[Kind, Record]]], Awaitable[object]]) -> None:
        #: writes one batch in one transaction (``Engine.restore_batch``, or ``bench.pg_fill``)
        self.sink = sink
        self.clock = T0
        self.next_msg = 1
        self.seq: dict[str, int] = {}
        self.convs: dict[str, Record] = {}
        self.messages = 0
        #: every message is this record with its own sid, seq, times, role and content
        self.template = Message(context=USER.context, user_id=USER.user_id, channel="cli").to_record()
        self.contents = [words(rng.randint(8, 40)) for _ in range(5000)]
        self.others: list[str] = []

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    async def base(self) -> None:
        batch: list[tuple[Kind, Record]] = []
        for i in range(1, CONVERSATIONS + 1):
            sid = to_base36(i)
            rec = Conversation(
                sid=sid,
                context=USER.context,
                user_id=USER.user_id,
                created_at=self.tick(),
                updated_at=self.clock,
                title=words(3),
                last_channel="cli",
            ).to_record()
            self.convs[sid], self.seq[sid] = rec, 0
            batch.append((Kind.CONVERSATION, rec))
        self.others = list(self.convs)[1:]
        for i in range(1, MEMORIES + 1):
            content = f"{words(12)} {i}"
            rec = Memory(
                sid=to_base36(i),
                context=MEMO.context,
                user_id=MEMO.user_id,
                created_at=self.tick(),
                updated_at=self.clock,
                content=content,
                hash=memory_hash(content),
            ).to_record()
            batch.append((Kind.MEMORY, rec))
        for start in range(0, len(batch), BATCH):
            await self.sink(batch[start : start + BATCH])

    async def grow_to(self, total: int) -> None:
        """Add messages until ``total``; batches are generated while the previous one is written."""
        async with anyio.create_task_group() as tg:
            writing = anyio.Event()
            writing.set()
            while self.messages < total:
                batch = self.next_batch(min(BATCH, total - self.messages))
                await writing.wait()
                writing = anyio.Event()
                tg.start_soon(self.write, batch, writing)

    async def write(self, batch: list[tuple[Kind, Record]], done: anyio.Event) -> None:
        await self.sink(batch)
        done.set()

    async def after_appends(self, engine: Engine, touched: list[str]) -> None:
        """The measured appends stored messages too: count them, skip the sids the engine gave them,
        and read back the conversations they went to (their seq and message_count moved on)."""
        self.messages += len(touched)
        self.next_msg += len(touched)
        for sid in set(touched):
            rec = await engine.get(Kind.CONVERSATION, USER, sid)
            assert rec is not None
            self.convs[sid], self.seq[sid] = rec, int(rec["message_count"])

    def next_batch(self, n: int) -> list[tuple[Kind, Record]]:
        """``n`` messages: the big conversation first, then runs of 100 in one conversation at a time
        (as conversations grow in turns, and so that index pages are filled, not scattered)."""
        big = to_base36(1)
        batch: list[tuple[Kind, Record]] = []
        touched: set[str] = set()
        for _ in range(n):
            conv = big if self.seq[big] < BIG_CAP else self.others[(self.messages // 100) % len(self.others)]
            self.seq[conv] += 1
            self.messages += 1
            touched.add(conv)
            rec = dict(
                self.template,
                sid=to_base36(self.next_msg),
                created_at=self.tick(),
                updated_at=self.clock,
                timestamp=self.clock,
                conversation_id=conv,
                seq=self.seq[conv],
                role="user" if self.messages % 2 else "assistant",
                content=rng.choice(self.contents),
            )
            self.next_msg += 1
            batch.append((Kind.MESSAGE, rec))
        for conv in touched:
            conv_rec = dict(self.convs[conv], message_count=self.seq[conv], updated_at=self.clock)
            self.convs[conv] = conv_rec
            batch.append((Kind.CONVERSATION, conv_rec))
        return batch


async def timed(samples: int, op: Callable[[], Awaitable[object]]) -> list[float]:
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        await op()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def measure(
    store: Store, samples: int, touched: list[str]
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Wall-clock ms of every call per operation, and the mean CPU ms per call (all threads); the
    conversation of every append goes into ``touched``."""
    sids = [to_base36(i) for i in range(2, CONVERSATIONS + 1)]

    async def append() -> None:
        touched.append(rng.choice(sids))
        await store.messages.append(
            USER, Message(conversation_id=touched[-1], role="user", content=words(20), channel="cli")
        )

    ops: dict[str, Callable[[], Awaitable[object]]] = {
        "append": append,
        "history": lambda: store.messages.history(USER, to_base36(1), limit=50),
        "list": lambda: store.conversations.list(USER, limit=50),
        "search": lambda: store.memories.search(MEMO, words(2), limit=10),
    }
    for op in ops.values():
        await timed(min(20, samples), op)  # warm the page cache and the thread
    # round-robin over the operations, so that a burst of load from elsewhere on the machine hits
    # all of them alike instead of one operation's whole sample
    results: dict[str, list[float]] = {name: [] for name in ops}
    cpu = dict.fromkeys(ops, 0.0)
    for _ in range(samples):
        for name, op in ops.items():
            cpu_start = time.process_time()
            results[name] += await timed(1, op)
            cpu[name] += time.process_time() - cpu_start
    return results, {name: total * 1000 / samples for name, total in cpu.items()}


def disk_baseline(data_dir: Path, fsync: bool, samples: int) -> str:
    """p50/p99 of committing a one-row insert with bare sqlite3: the floor an append cannot beat."""
    times = [t * 1000 for t in bare_commits(data_dir / "baseline.db", samples, fsync=fsync)]
    return f"p50 {pct(times, 0.5):.3f} ms, p99 {pct(times, 0.99):.3f} ms"


async def run(sizes: list[int], samples: int, data_dir: Path, fsync: bool, url: str = "") -> int:
    """The benchmark on the embedded engine in ``data_dir``, or on the postgres engine at ``url``."""
    if url:
        engine: Engine = _postgres(url)
        print(f"# postgres store benchmark, {_redacted(url)}, {samples} samples per op", flush=True)
        print(f"# commit baseline, bare one-row INSERT: {await commit_baseline(url, samples)}", flush=True)
    else:
        engine = EmbeddedEngine(data_dir, fsync_commits=fsync)
        mode = "synchronous=FULL (fsync per commit)" if fsync else "synchronous=NORMAL (no fsync per commit)"
        print(
            f"# embedded store benchmark, {mode}, data dir {data_dir}, {samples} samples per op", flush=True
        )
        print(
            f"# disk baseline, bare sqlite3 one-row commit: {disk_baseline(data_dir, fsync, samples)}",
            flush=True,
        )
    table: dict[int, dict[str, list[float]]] = {}
    async with Store(engine) as store, contextlib.AsyncExitStack() as stack:
        sink: Callable[[list[tuple[Kind, Record]]], Awaitable[object]] = engine.restore_batch
        if url:
            sink = (await stack.enter_async_context(PgLoader(url))).write
        filler = Filler(sink)
        start = time.perf_counter()
        await filler.base()
        print(
            f"# base: {CONVERSATIONS} conversations, {MEMORIES} memories in "
            f"{time.perf_counter() - start:.1f}s",
            flush=True,
        )
        print(
            f"{'messages':>10} {'big conv':>9} {'op':>8} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms':>7}   fill",
            flush=True,
        )
        for size in sizes:
            start = time.perf_counter()
            await filler.grow_to(size)
            await _settle(engine)
            fill_s = time.perf_counter() - start
            if url:
                print(f"# {size}: {await check_invariants(url)}", flush=True)
            touched: list[str] = []
            before = await maintenance(url) if url else {}
            table[size], cpu = await measure(store, samples, touched)
            if url:
                print(
                    f"# {size}: maintenance during the measurement: {during(before, await maintenance(url))}"
                )
            for name, values in table[size].items():
                print(
                    f"{size:>10} {filler.seq[to_base36(1)]:>9} {name:>8} {pct(values, 0.5):>8.3f} "
                    f"{pct(values, 0.99):>8.3f} {cpu[name]:>7.3f}   {fill_s:.1f}s",
                    flush=True,
                )
            await filler.after_appends(engine, touched)
    if url:
        print(f"# commit baseline at the end: {await commit_baseline(url, samples)}", flush=True)
    code = report(table, PG_TARGETS if url else TARGETS)
    print(f"# load average (1 min) at end: {os.getloadavg()[0]:.2f}", flush=True)
    return code


def _postgres(url: str) -> Engine:
    from store.postgres.engine import PostgresEngine  # noqa: PLC0415

    return PostgresEngine(StoreSettings(engine="postgres", url=url, timeout_s=30.0))


def _redacted(url: str) -> str:
    from store.postgres.engine import where  # noqa: PLC0415

    return f"server {where(url)}"


async def _settle(engine: Engine) -> None:
    """The steady state after a bulk load: the embedded engine's log written back (kept at its
    working size); PostgreSQL's statistics and visibility map brought up to date (autovacuum would),
    then a checkpoint, so that the load's dirty pages are not being written back (and fsynced) while
    the appends wait for their own WAL flushes (skipped, with a note, without the right to run it)."""
    if isinstance(engine, EmbeddedEngine):
        await engine.checkpoint(truncate=False)
        return
    import psycopg  # noqa: PLC0415

    async with await psycopg.AsyncConnection.connect(engine.url, autocommit=True) as conn:  # type: ignore[attr-defined]
        await conn.execute("VACUUM ANALYZE")
        try:
            await conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            print("# no CHECKPOINT after the load (needs superuser or pg_checkpoint)", flush=True)


def report(
    table: dict[int, dict[str, list[float]]], targets: dict[str, tuple[float, float | None]] = TARGETS
) -> int:
    first, last = min(table), max(table)
    print(f"\n# ratios {last} vs {first} messages, and max/min across all sizes")
    print("# (flat: max/min <= 1.5 at p50 and <= 2 at p99)")
    flat = True
    for name in table[first]:
        r50 = pct(table[last][name], 0.5) / pct(table[first][name], 0.5)
        r99 = pct(table[last][name], 0.99) / pct(table[first][name], 0.99)
        p50s = [pct(table[size][name], 0.5) for size in table]
        p99s = [pct(table[size][name], 0.99) for size in table]
        span50, span99 = max(p50s) / min(p50s), max(p99s) / min(p99s)
        flat &= span50 <= 1.5 and span99 <= 2.0
        print(f"{name:>8}  p50 x{r50:.2f}  p99 x{r99:.2f}   max/min p50 {span50:.2f}  p99 {span99:.2f}")
    print(f"\n# targets at {last} messages")
    met = True
    for name, (p50_max, p99_max) in targets.items():
        p50, p99 = pct(table[last][name], 0.5), pct(table[last][name], 0.99)
        ok = p50 <= p50_max and (p99_max is None or p99 <= p99_max)
        met &= ok
        limit = f"p50 <= {p50_max} ms" + (f", p99 <= {p99_max} ms" if p99_max else "")
        print(f"{name:>8}  {limit:<28} {'met' if ok else 'MISSED'} (p50 {p50:.3f}, p99 {p99:.3f})")
    print(f"flat (p50 and p99): {'yes' if flat else 'NO'}")
    return 0 if met and flat else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000", help="message counts, ascending")
    parser.add_argument("--quick", action="store_true", help="sizes up to 100k and 100 samples")
    parser.add_argument("--samples", type=int, default=500, help="timed calls per operation and size")
    parser.add_argument("--dir", type=Path, help="data dir to fill (default: a temporary one)")
    parser.add_argument(
        "--no-fsync", action="store_true", help="store.fsync_commits = false (synchronous=NORMAL)"
    )
    parser.add_argument("--with-osis", action="store_true", help="then bench/store_osis.py: osis vs embedded")
    parser.add_argument("--engine", choices=("embedded", "postgres"), default="embedded")
    parser.add_argument("--url", default="", help="postgres: this server (default: a throwaway cluster)")
    args = parser.parse_args()
    # the engines log at debug level; a benchmark prints figures only
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"# load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine)", flush=True)
    code = bench_postgres(args) if args.engine == "postgres" else bench_embedded(args)
    if args.with_osis:
        osis = [sys.executable, "-m", "bench.store_osis"]
        code |= subprocess.run(
            osis + ([] if args.no_fsync else ["--fsync"]), check=False, cwd=ROOT
        ).returncode
    return code


def bench_postgres(args: argparse.Namespace) -> int:
    """On ``--url``, or on a throwaway cluster with the server's defaults (fsync on: durable commits)."""
    sizes = [1000, 10_000, 100_000] if args.quick else sorted(int(s) for s in args.sizes.split(","))
    samples = 100 if args.quick else args.samples
    if args.url:
        return anyio.run(run, sizes, samples, Path("."), True, args.url)
    from tests.store.postgres_fixtures import make_cluster, remove_cluster  # noqa: PLC0415

    cluster = make_cluster("-c shared_buffers=256MB")
    try:
        print(f"# {cluster.version()}, a throwaway cluster, fsync on, synchronous_commit on", flush=True)
        return anyio.run(run, sizes, samples, Path("."), True, cluster.url())
    finally:
        remove_cluster(cluster)


def bench_embedded(args: argparse.Namespace) -> int:
    sizes = [1000, 10_000, 100_000] if args.quick else sorted(int(s) for s in args.sizes.split(","))
    samples = 100 if args.quick else args.samples
    if args.dir:
        code = anyio.run(run, sizes, samples, args.dir, not args.no_fsync)
    else:
        with tempfile.TemporaryDirectory(prefix="hero-bench-") as tmp:
            code = anyio.run(run, sizes, samples, Path(tmp), not args.no_fsync)
    if args.with_osis:
        print("\n# osis engine over loopback (bench/store_osis.py)", flush=True)
        osis = [sys.executable, "-m", "bench.store_osis", "--samples", str(samples)]
        code |= subprocess.call(osis + ([] if args.no_fsync else ["--fsync"]), cwd=ROOT)
    return code


if __name__ == "__main__":
    sys.exit(main())
