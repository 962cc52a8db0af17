"""Soak: N web turns over M conversations through ``hero-agent serve``, RSS and latency sampled.

The daemon runs as a subprocess on a fresh data dir with its defaults (durable store, memory
extraction on, INFO logs to a file), talking to the fake LLM (``python -m tests.fakes.openai_server``,
answering at once) in its own process. M clients each send their conversation's turns one after the
other (``POST /api/chat``, read to ``done``) until N turns are done. Every ``--sample-every`` turns it
prints the daemon's memory from ``/proc/<pid>/status`` (RSS, and its anonymous / file-backed / shared
parts: the Python heap and SQLite's page cache are anonymous; code, libraries and the SQLite ``-shm``
map are file-backed), its child processes' added (the store's writer process, the daemon's by
default; its own RSS in the ``writer`` column), and
the latency of the turns since the previous sample. At the end: the run time, the data dir's size,
the RSS growth over the second half of the run, the latency of the last 1,000 turns against turns
1,000-2,000 with the slowest of them (and of the whole run: when each ended, UTC, to find it in the
daemon's log), and the daemon's garbage collections over the run (``/metrics``). Beside the target's
comparison, the last 1,000 turns against the first 1,000 whose conversations' windows had all
reached their cap (``agent.history_limit`` messages): with 16 conversations that takes ~1,600
turns, so turns 1,000-2,000 are partly turns with shorter prompts. The data dir and the daemon's
log are kept in the ``hero-soak-*`` directory it names (~135 MB). Not part of the test
suite.

    .venv/bin/python -m bench.soak [--turns 50000] [--conversations 16] [--sample-every 2500]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

from bench.common import ROOT, free_port, gc_figures, gc_summary, pct, start_fake_llm, wait_healthy
from config.loader import load_settings


@dataclass
class Run:
    total: int
    #: each finished turn's latency (s), in completion order
    latencies: list[float] = field(default_factory=list)
    #: when each of them ended (``time.time()``: the daemon's log stamps its lines on the same clock)
    ended_at: list[float] = field(default_factory=list)
    #: for each of them: its conversation's window was at its cap (``history_limit`` messages) when
    #: it started, so its prompt had its full length
    capped: list[bool] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: int = 0


def memory_mb(pid: int) -> dict[str, float]:
    """The daemon's VmRSS and its parts (RssAnon, RssFile, RssShmem) in MB, each with its child
    processes' added (the embedded store's writer process: the daemon's by default), and the
    children's own VmRSS as ``writer``."""
    out = _status_mb(pid)
    out["writer"] = 0.0
    for child in _children(pid):
        theirs = _status_mb(child)
        for name, value in theirs.items():
            out[name] += value
        out["writer"] += theirs.get("VmRSS", 0.0)
    return out


def _status_mb(pid: int) -> dict[str, float]:
    out = dict.fromkeys(("VmRSS", "RssAnon", "RssFile", "RssShmem"), 0.0)
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # a child that has just ended
        return out
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in out:
            out[name] = int(value.split()[0]) / 1024
    return out


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


async def one_turn(client: httpx.AsyncClient, cid: str, text: str, run: Run, capped: bool) -> None:
    sent = time.perf_counter()
    done = False
    name = ""
    async with client.stream("POST", "/api/chat", json={"message": text, "conversation_id": cid}) as resp:
        if resp.status_code != 200:
            run.errors.append(f"status {resp.status_code}")
            return
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:") and name == "done":
                done = True
            elif line.startswith("data:") and name == "error":
                run.errors.append(json.loads(line[5:]).get("code", "error"))
    if not done:
        run.errors.append("no done")
        return
    run.latencies.append(time.perf_counter() - sent)
    run.ended_at.append(time.time())
    run.capped.append(capped)


async def drive(
    base_url: str, pid: int, conversations: int, run: Run, sample_every: int, history_limit: int
) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        cids = []
        for i in range(conversations):
            resp = await client.post("/api/conversations", json={"title": f"soak {i}"})
            resp.raise_for_status()
            cids.append(resp.json()["id"])
        heads = ("turns", "s", "RSS MB", "anon", "file", "shmem", "writer", "p50 ms", "p99 ms")
        print(" ".join(f"{h:>7}" for h in heads))
        began = time.perf_counter()
        sample(0, began, pid, [])

        async def client_loop(cid: str) -> None:
            stored = 0  # messages in this conversation (a turn stores two)
            while run.started < run.total:
                run.started += 1
                n = run.started
                text = f"soak message {n}: {'words ' * (n % 17)}"
                await one_turn(client, cid, text, run, capped=stored >= history_limit)
                stored += 2
                done = len(run.latencies) + len(run.errors)
                if done % sample_every == 0:
                    sample(done, began, pid, run.latencies[-sample_every:])

        async with anyio.create_task_group() as tg:
            for cid in cids:
                tg.start_soon(client_loop, cid)


SAMPLES: list[tuple[int, float]] = []


def sample(turns: int, began: float, pid: int, window: list[float]) -> None:
    mem = memory_mb(pid)
    SAMPLES.append((turns, mem["VmRSS"]))
    lat = (
        f"{pct(window, 0.5) * 1000:>7.1f} {pct(window, 0.99) * 1000:>7.1f}" if window else f"{'':>7} {'':>7}"
    )
    print(
        f"{turns:>7} {time.perf_counter() - began:>7.0f} {mem['VmRSS']:>7.1f} {mem['RssAnon']:>6.1f} "
        f"{mem['RssFile']:>6.1f} {mem['RssShmem']:>6.1f} {mem['writer']:>7.1f} {lat}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=50_000)
    parser.add_argument("--conversations", type=int, default=16)
    parser.add_argument("--sample-every", type=int, default=2_500)
    parser.add_argument("--config", default="", help="extra TOML appended to the daemon's config")
    args = parser.parse_args()
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f}", flush=True)
    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="hero-soak-"))
    web_port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fake, llm_url = start_fake_llm()
    config = tmp / "hero-agent.toml"
    config.write_text(
        f'[web]\nport = {web_port}\n[telegram]\nenabled = false\n[llm]\nmodel = "fake-model"\n'
        f'[logging]\nlevel = "info"\nformat = "json"\n{args.config}\n'
    )
    data = tmp / "data"
    daemon_env = {
        **env,
        "HERO_AGENT_DATA_DIR": str(data),
        "OPENAI_BASE_URL": llm_url,
        "OPENAI_API_KEY": "sk-soak",
    }
    log_path = tmp / "daemon.log"
    hero = str(Path(sys.executable).parent / "hero-agent")
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [hero, "serve", "--config", str(config)], env=daemon_env, stdout=log, stderr=log, cwd=ROOT
        )
    run = Run(args.turns)
    base_url = f"http://127.0.0.1:{web_port}"
    try:

        async def go() -> None:
            async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
                await wait_healthy(client, daemon)
            gc_seen.append(gc_figures(base_url))
            limit = load_settings(str(config), daemon_env).agent.history_limit
            await drive(base_url, daemon.pid, args.conversations, run, args.sample_every, limit)
            gc_seen.append(gc_figures(base_url))

        gc_seen: list[dict[str, tuple[float, float]]] = []
        anyio.run(go)
        final = memory_mb(daemon.pid)
    finally:
        # the daemon first: its memory extractions still queued flush against the fake at shutdown
        daemon.terminate()
        daemon.wait(60)
        fake.terminate()
        fake.wait(30)
    report(args, run, final, time.perf_counter() - began, data, log_path, daemon.returncode)
    print(f"the daemon's garbage collections over the run, {gc_summary(*gc_seen)}")
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}")


def report(
    args: argparse.Namespace,
    run: Run,
    final: dict[str, float],
    seconds: float,
    data: Path,
    log: Path,
    code: int,
) -> None:
    lat = run.latencies
    print(f"turns={len(lat)} errors={len(run.errors)} daemon_exit={code} run time={seconds:.0f}s")
    if run.errors:
        print("error kinds:", sorted(set(run.errors))[:10])
    print(f"data dir {dir_mb(data):.1f} MB (log file of the daemon: {log.stat().st_size / 2**20:.1f} MB)")
    print(f"both kept in {log.parent} (remove it when done)")
    print(
        f"RSS at the end {final['VmRSS']:.1f} MB (anon {final['RssAnon']:.1f}, file {final['RssFile']:.1f};"
        f" the writer process {final['writer']:.1f} of it)"
    )
    half = [rss for turns, rss in SAMPLES if turns >= args.turns // 2]
    if len(half) >= 2:
        print(f"RSS growth over the second half: {100 * (half[-1] / half[0] - 1):+.1f}% (target < 5%)")
    if len(lat) >= 3000:
        early, late = lat[1000:2000], lat[-1000:]
        r50, r99 = pct(late, 0.5) / pct(early, 0.5), pct(late, 0.99) / pct(early, 0.99)
        print(
            f"latency, last 1000 vs turns 1000-2000: p50 x{r50:.2f} (target within 10%), "
            f"p99 x{r99:.2f} (target within 25%)"
        )
        print(f"the slowest of the last 1000 turns: {slowest(run, len(lat) - 1000, 5)}")
        capped_from = 1 + max((i for i, capped in enumerate(run.capped) if not capped), default=-1)
        if len(lat) - capped_from >= 2000:
            # turns 1,000-2,000 are partly turns whose windows had not yet reached their cap
            full = lat[capped_from : capped_from + 1000]
            print(
                f"  the same against the first 1000 turns with every window at its cap (turns "
                f"{capped_from + 1}-{capped_from + 1000}): p50 x{pct(late, 0.5) / pct(full, 0.5):.2f}, "
                f"p99 x{pct(late, 0.99) / pct(full, 0.99):.2f}; turns 1000-2000 at the cap: "
                f"{sum(run.capped[1000:2000]) / 10:.0f}%"
            )
    if lat:
        print(f"the slowest turns of the run: {slowest(run, 0, 5)}")


def slowest(run: Run, first: int, n: int) -> str:
    """The ``n`` slowest turns from the ``first``-th finished on, slowest first: ms, and when each
    ended (UTC, as the daemon's log stamps its lines)."""
    turns = sorted(range(first, len(run.latencies)), key=lambda i: run.latencies[i], reverse=True)[:n]
    return ", ".join(
        f"{run.latencies[i] * 1000:.0f} ms (turn {i + 1}, {_utc(run.ended_at[i])})" for i in turns
    )


def _utc(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%H:%M:%S.%f")[:-3]


if __name__ == "__main__":
    main()
