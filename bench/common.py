"""What the benchmarks share: the percentile of a sample, and waiting for a started daemon to answer.

Every benchmark runs as a module from the repository root (``python -m bench.web_load``), so that
``bench.common`` imports the same way everywhere, with no edit of ``sys.path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import orjson

from agent.providers import h1
from agent.switching import shorten_switch_interval
from config.logging import configure_logging
from config.settings import LoggingSettings

#: the repository root: the working directory of a bench run in a subprocess (``-m bench.x``)
ROOT = Path(__file__).resolve().parents[1]
#: how long a daemon may take to answer /healthz after it was started (a loaded machine is slow)
HEALTHY_DEADLINE_S = 60.0


def free_port() -> int:
    """A loopback port free at the time of asking (for a server started next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_fake_llm(*options: str) -> tuple[subprocess.Popen[str], str]:
    """The fake OpenAI server (``tests.fakes.openai_server``, with ``options`` such as ``--tokens``)
    started in its own process on a free loopback port, so its work never competes with the agent for
    the GIL: the process (the caller stops it) and its base URL, once it said it is ready."""
    cmd = [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(free_port()), *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert proc.stdout is not None  # stdout=PIPE
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        raise SystemExit(f"the fake LLM server did not start: {line!r}")
    return proc, line.split()[1]


@contextlib.contextmanager
def fake_llm_process(
    *options: str, cpus: set[int] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """:func:`start_fake_llm` for the length of a ``with``: yields the process and its base URL,
    stops it on exit. ``cpus``: every thread of the fake runs on those CPUs only
    (``sched_setaffinity``, Linux)."""
    proc, url = start_fake_llm(*options)
    try:
        if cpus is not None:
            for tid in os.listdir(f"/proc/{proc.pid}/task"):
                os.sched_setaffinity(int(tid), cpus)
        yield proc, url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


@contextlib.contextmanager
def fake_llm(*options: str, cpus: set[int] | None = None) -> Iterator[str]:
    """:func:`fake_llm_process`, yielding only the base URL."""
    with fake_llm_process(*options, cpus=cpus) as (_, url):
        yield url


_TICK = os.sysconf("SC_CLK_TCK")


def store_thread_id() -> int | None:
    """The native id of this process's one embedded-store worker thread (``hero-agent-store:<file>``);
    None when there is not exactly one (code older than that thread, or several data dirs open)."""
    ids = [t.native_id for t in threading.enumerate() if t.name.startswith("hero-agent-store:")]
    return ids[0] if len(ids) == 1 else None


def _schedstat(path: str) -> tuple[float, float]:
    on_cpu, waiting = Path(path).read_text().split()[:2]
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def process_sched(pid: int) -> tuple[float, float]:
    """A single-threaded process so far (``/proc/<pid>/schedstat``, nanoseconds where
    ``/proc/<pid>/stat`` counts clock ticks), seconds: on a CPU, and runnable but waiting for one.
    The embedded store's writer process."""
    return _schedstat(f"/proc/{pid}/schedstat")


def thread_sched(native_id: int) -> tuple[float, float]:
    """A thread of this process so far (Linux ``schedstat``), seconds: on a CPU, and runnable but
    waiting on a CPU's run queue."""
    return _schedstat(f"/proc/self/task/{native_id}/schedstat")


def stat_cpu(stat: Path) -> tuple[float, float]:
    """User and system CPU seconds so far, from a ``/proc`` stat file: a process's
    (``/proc/<pid>/stat``) or one of this process's threads' (``/proc/self/task/<tid>/stat``)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def process_cpu(pid: int) -> float:
    """A process's user + system CPU seconds so far (0 once it is gone)."""
    try:
        user, system = stat_cpu(Path(f"/proc/{pid}/stat"))
    except OSError:
        return 0.0
    return user + system


def tree_cpu(pid: int) -> float:
    """:func:`process_cpu` of ``pid`` and of its children (PostgreSQL's backends, WAL writer...)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return process_cpu(pid) + sum(process_cpu(int(p)) for p in out.stdout.split())


def cpu_probe() -> float:
    """This machine's speed right now: the best of 5 timings of a fixed pure-Python loop (the sum of
    i * i for i below 10,000), microseconds per loop. The same code runs slower when this is higher:
    figures taken hours apart compare only beside it."""
    timings = timeit.repeat("sum(i * i for i in range(10000))", number=200, repeat=5)
    return min(timings) / 200 * 1e6


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``: the sample nearest to rank ``q * (n - 1)``; NaN when
    there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bare_commits(
    path: Path, samples: int, *, fsync: bool = True, warm: bool = False, pause_s: float = 0.0
) -> list[float]:
    """Seconds per one-row transaction (``BEGIN IMMEDIATE``, an INSERT, ``COMMIT``) with bare sqlite3
    in WAL mode at ``path``, ``synchronous=FULL`` with ``fsync``: the floor a store's commit cannot
    beat. ``warm``: the log first grown to a working size and checkpointed, so that a commit's fsync
    has no file growth to flush (as the store is measured, ``bench.agent_turns.warm_log``);
    ``pause_s`` between commits, as between a turn's."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
        conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
        if warm:
            conn.executemany("INSERT INTO t VALUES (?)", ((-i,) for i in range(samples)))
            conn.execute("PRAGMA wal_checkpoint(RESTART)")
        times = []
        for i in range(samples):
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?)", (i,))
            conn.execute("COMMIT")
            times.append(time.perf_counter() - start)
            if pause_s:
                time.sleep(pause_s)
        return times
    finally:
        conn.close()


async def wait_healthy(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    """Poll the daemon's ``/healthz`` through ``client`` until it answers 200, within
    :data:`HEALTHY_DEADLINE_S`; exit when the daemon exited first."""
    with anyio.fail_after(HEALTHY_DEADLINE_S):
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"hero-agent serve exited with {proc.returncode}")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await anyio.sleep(0.1)


async def wait_healthy_at(base_url: str, proc: subprocess.Popen[bytes]) -> None:
    """:func:`wait_healthy` with a client of its own for ``base_url``."""
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        await wait_healthy(client, proc)


class WaitedFuture(asyncio.Future[None]):
    """A batch's durability (``Engine.batch_early``) as the caller sees it, with the time its awaits
    actually waited passed to ``on_wait`` (a future already settled costs no wait): what a turn spends
    blocked on the commit, as opposed to the commit running while the turn works."""

    def __init__(
        self,
        inner: asyncio.Future[None],
        on_wait: Callable[[float], None],
        during: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        super().__init__()
        self._on_wait = on_wait
        #: entered while an await waits (a bench's count of the store calls in flight)
        self._during = during
        inner.add_done_callback(self._copy)

    def _copy(self, inner: asyncio.Future[None]) -> None:
        if inner.cancelled():
            self.cancel()
        elif (error := inner.exception()) is not None:
            self.set_exception(error)
        else:
            self.set_result(None)

    def __await__(self) -> Generator[Any, None, None]:
        if self.done():
            return (yield from super().__await__())
        started = time.perf_counter()
        try:
            with self._during():
                return (yield from super().__await__())
        finally:
            self._on_wait(time.perf_counter() - started)


def like_the_daemon(log_level: str = "info") -> None:
    """What the daemon's run-time looks like to an in-process bench: its logging (JSON events at
    ``log_level``, rendered to /dev/null as they would be to a file) and the switch interval it sets
    once it is up (``agent/switching.py``)."""
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    configure_logging(LoggingSettings(level=log_level, format="json"), stream=devnull)
    shorten_switch_interval()


def gc_figures(base_url: str) -> dict[str, tuple[float, float]]:
    """Per generation: the daemon's garbage collections so far and the longest pause (``/metrics``)."""
    out: dict[str, list[float]] = {}
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        for name, slot in (("hero_gc_collections_total", 0), ("hero_gc_pause_max_seconds", 1)):
            if line.startswith(name + "{"):
                gen = line.split('generation="', 1)[1].split('"', 1)[0]
                out.setdefault(gen, [0.0, 0.0])[slot] = float(line.rsplit(" ", 1)[1])
    return {g: (v[0], v[1]) for g, v in out.items()}


def gc_summary(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> str:
    """The collections between two :func:`gc_figures`, per generation, with the longest pause where
    a longer one than before happened in between."""
    return "by generation (count, longest pause ms): " + ", ".join(
        f"{g}: {after[g][0] - before[g][0]:.0f}"
        + (f" (longest {after[g][1] * 1000:.1f})" if after[g][1] > before[g][1] else "")
        for g in sorted(after)
    )


class StatusError(Exception):
    """An answer other than 200 to :func:`post_lines`."""

    def __init__(self, status: int) -> None:
        super().__init__(f"status {status}")
        self.status = status


@contextlib.asynccontextmanager
async def light_client(base_url: str, connections: int) -> AsyncIterator[tuple[h1.Pool, str]]:
    """A load generator's HTTP client: the daemon's own HTTP/1.1 pool (``agent/providers/h1.py``) to
    ``base_url``'s origin, and the URL's path to put before each request's. A bench's 200 clients
    share the machine with what they measure: with httpx they spent about as much CPU as the daemon
    (1.9 s against 1.75 s in one ``web_load``), and that contention showed up in the tail they
    measured."""
    url = urlsplit(base_url)
    origin = h1.Origin.of(url.scheme, url.hostname or "127.0.0.1", url.port)
    pool = h1.Pool(
        origin,
        connect_timeout=30,
        read_timeout=120,
        ssl_context=ssl.create_default_context,
        max_connections=connections,
        max_keepalive=connections,
        stats=h1.WireStats(),
    )
    try:
        yield pool, url.path.rstrip("/")
    finally:
        await pool.aclose()


async def post_lines(pool: h1.Pool, path: str, body: object) -> AsyncIterator[str]:
    """POST ``body`` as JSON; the answer's lines as they arrive (StatusError for an answer not 200)."""
    head = h1.request_head("POST", path, pool.origin, [("content-type", "application/json")])
    async with await pool.request(head, orjson.dumps(body)) as resp:
        if resp.status_code != 200:
            raise StatusError(resp.status_code)
        rest = b""
        async for data in resp.aiter_bytes():
            *lines, rest = (rest + data).split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode()
