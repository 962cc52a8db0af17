"""Scaling bench: 1, 2 and 3 ``hero-agent serve`` on one PostgreSQL, N concurrent web chats.

A throwaway PostgreSQL cluster (``tests/store/postgres_fixtures.py``), the fake OpenAI server of
``tests/fakes`` (streaming ``--tokens`` chunks ``--chunk-delay`` apart) and, per stage, a fresh
database with 1, 2 or 3 daemons. ``--chats`` clients (default 300) each own a conversation and run
``--turns`` turns one after another, all clients at once, spread round-robin over the daemons.

Reported per stage: turns per second (turns / wall time of the load), time to first token p50 and
p99 (request sent -> first ``delta``), errors (must be 0), and where the CPU went during the load
(CPU seconds of the daemons, of PostgreSQL, of the fake LLM, of this client; from /proc), so the
limit is measured rather than guessed. The load average is printed before and after: the machine
is shared, so the figures are those of a machine that was not quiet.

    .venv/bin/python -m bench.scale [--chats 300] [--turns 3] [--tokens 10] [--chunk-delay 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import psycopg

from bench.common import ROOT, free_port, pct, process_cpu, start_fake_llm, tree_cpu, wait_healthy_at
from tests.store.postgres_fixtures import Cluster, make_cluster, remove_cluster


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Stage:
    daemons: int
    turns: int = 0
    wall_s: float = 0.0
    ttft: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)


async def one_turn(client: httpx.AsyncClient, base: str, cid: str, tokens: int, stage: Stage) -> None:
    sent = time.perf_counter()
    first: float | None = None
    deltas, done, name = 0, False, ""
    try:
        body = {"message": "bench", "conversation_id": cid}
        async with client.stream("POST", f"{base}/api/chat", json=body) as resp:
            if resp.status_code != 200:
                stage.errors.append(f"status {resp.status_code}")
                return
            async for line in resp.aiter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    if name == "delta":
                        deltas += 1
                        first = first or time.perf_counter()
                    elif name == "done":
                        done = True
                    elif name == "error":
                        stage.errors.append(json.loads(line[5:]).get("code", "error"))
    except httpx.HTTPError as exc:
        # the cause names the socket error (a reset, an incomplete chunked read) and when it came
        cause = exc.__cause__ or exc.__context__
        stage.errors.append(
            f"{type(exc).__name__}({type(cause).__name__ if cause else ''}: {str(cause or exc)[:60]}) "
            f"after {time.perf_counter() - sent:.1f}s, first delta {'seen' if first else 'not seen'}"
        )
        return
    if not done or deltas != tokens or first is None:
        stage.errors.append(f"done={done} deltas={deltas}")
        return
    stage.turns += 1
    stage.ttft.append(first - sent)


async def run_load(bases: list[str], chats: int, turns: int, tokens: int, stage: Stage) -> None:
    # one connection per request: the daemon's uvicorn closes an idle keep-alive connection after 5 s,
    # and on a starved machine that close races a request already sent on it (the server's loop runs
    # the timer before it reads the request: a reset, ReadError). Measured here: 0.5% of the turns of
    # 3 daemons at load average 9, even with a 1 s client-side expiry. See docs/deploy.md.
    limits = httpx.Limits(max_connections=chats + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        convs: list[tuple[str, str]] = []
        for i in range(chats):
            base = bases[i % len(bases)]
            resp = await client.post(f"{base}/api/conversations", json={"title": f"chat {i}"})
            resp.raise_for_status()
            convs.append((base, resp.json()["id"]))

        async def chat(base: str, cid: str) -> None:
            for _ in range(turns):
                await one_turn(client, base, cid, tokens, stage)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for base, cid in convs:
                tg.start_soon(chat, base, cid)
        stage.wall_s = time.perf_counter() - started


def start_daemon(
    tmp: Path, n: int, url: str, llm_url: str, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = tmp / f"daemon{n}.toml"
    config.write_text(
        f'[store]\nengine = "postgres"\nurl = "{url}"\n[web]\nport = {port}\n[telegram]\nenabled = false\n'
        f'[memory]\nenabled = false\n[llm]\nmodel = "fake-model"\n[logging]\nlevel = "warning"\n'
    )
    daemon_env = {**env, "OPENAI_BASE_URL": llm_url, "OPENAI_API_KEY": "sk-bench"}
    with (tmp / f"daemon{n}.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "hero-agent"), "serve", "--config", str(config)],
            env=daemon_env,
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
    return proc, f"http://127.0.0.1:{port}"


def postmaster_pid(cluster: Cluster) -> int:
    return int((cluster.data / "postmaster.pid").read_text().split()[0])


def run_stage(
    n: int, cluster: Cluster, llm: subprocess.Popen[str], llm_url: str, args: argparse.Namespace
) -> Stage:
    tmp = Path(tempfile.mkdtemp(prefix=f"hero-scale-{n}-"))
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS scale{n}")
        conn.execute(f"CREATE DATABASE scale{n}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HERO_AGENT_DATA_DIR": str(tmp / "data")}
    daemons = [start_daemon(tmp, i, cluster.url(f"scale{n}"), llm_url, env) for i in range(n)]
    stage = Stage(n)
    try:
        for proc, base in daemons:
            anyio.run(wait_healthy_at, base, proc)
        pg = postmaster_pid(cluster)
        before = {
            "daemons": sum(process_cpu(p.pid) for p, _ in daemons),
            "postgres": tree_cpu(pg),
            "fake_llm": process_cpu(llm.pid),
            "client": resource.getrusage(resource.RUSAGE_SELF).ru_utime
            + resource.getrusage(resource.RUSAGE_SELF).ru_stime,
        }
        print(f"  {n} daemon(s): load average before {loadavg()}", flush=True)
        anyio.run(run_load, [b for _, b in daemons], args.chats, args.turns, args.tokens, stage)
        after = {
            "daemons": sum(process_cpu(p.pid) for p, _ in daemons),
            "postgres": tree_cpu(pg),
            "fake_llm": process_cpu(llm.pid),
            "client": resource.getrusage(resource.RUSAGE_SELF).ru_utime
            + resource.getrusage(resource.RUSAGE_SELF).ru_stime,
        }
        stage.cpu = {k: after[k] - before[k] for k in before}
        print(f"  {n} daemon(s): load average after  {loadavg()}", flush=True)
    finally:
        for proc, _ in daemons:
            proc.terminate()
        for proc, _ in daemons:
            proc.wait(30)
    return stage


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chats", type=int, default=300)
    parser.add_argument("--turns", type=int, default=3, help="turns per chat, one after another")
    parser.add_argument("--tokens", type=int, default=10)
    parser.add_argument("--chunk-delay", type=float, default=0.01)
    parser.add_argument("--daemons", default="1,2,3", help="the stages, e.g. 1,2,3")
    args = parser.parse_args()

    print(f"cores: {os.cpu_count()}; load average at start: {loadavg()} (a shared machine: not quiet)")
    cluster = make_cluster("-c fsync=off", "-c max_connections=300")
    llm, llm_url = start_fake_llm("--chunk-delay", str(args.chunk_delay), "--tokens", str(args.tokens))
    stages: list[Stage] = []
    try:
        for n in (int(x) for x in args.daemons.split(",")):
            stages.append(run_stage(n, cluster, llm, llm_url, args))
    finally:
        llm.terminate()
        llm.wait(30)
        remove_cluster(cluster)
    print(
        f"\nchats={args.chats} turns/chat={args.turns} tokens={args.tokens} "
        f"chunk_delay={args.chunk_delay * 1000:.0f}ms, PostgreSQL {cluster.version().split()[2]} "
        "(fsync off)"
    )
    print("daemons  turns/s  ttft p50  ttft p99  errors  cpu s: daemons postgres fake_llm client")
    base = stages[0].turns / stages[0].wall_s if stages and stages[0].wall_s else 0.0
    for s in stages:
        rate = s.turns / s.wall_s if s.wall_s else 0.0
        ttft = [t * 1000 for t in s.ttft] or [0.0]
        cpu = "  ".join(f"{s.cpu.get(k, 0):7.1f}" for k in ("daemons", "postgres", "fake_llm", "client"))
        print(
            f"{s.daemons:7d}  {rate:7.1f}  {pct(ttft, 0.5):6.0f}ms  {pct(ttft, 0.99):6.0f}ms  "
            f"{len(s.errors):6d}  {cpu}   (x{rate / base if base else 0:.2f})"
        )
        if s.errors:
            print("   error kinds:", sorted(set(s.errors))[:10])
    for s in stages:
        total = sum(s.cpu.values())
        busy = total / s.wall_s if s.wall_s else 0.0
        print(
            f"{s.daemons} daemon(s): {busy:.2f} cores busy on average over {s.wall_s:.1f} s; "
            f"CPU per turn {1000 * total / max(1, s.turns):.1f} ms "
            f"(daemons {1000 * s.cpu.get('daemons', 0) / max(1, s.turns):.1f} ms, "
            f"postgres {1000 * s.cpu.get('postgres', 0) / max(1, s.turns):.1f} ms)"
        )
    print(f"load average at end: {loadavg()}")
    raise SystemExit(1 if any(s.errors for s in stages) else 0)


if __name__ == "__main__":
    main()
