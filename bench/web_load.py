"""Load bench of the web channel: N concurrent SSE chats against ``hero-agent serve``.

The fake LLM (``python -m tests.fakes.openai_server``) streams every answer as ``--tokens`` chunks
``--chunk-delay`` seconds apart; each client records when each ``delta`` event arrives. Reported:

* errors (any non-200, missing ``done``, text not all there): must be 0;
* added latency per token: client-side gap between consecutive tokens (each token arriving with the
  ``delta`` that carried it: chunks the daemon read at once come joined in one ``delta``) minus the
  fake's chunk delay (p50 / p99; target p99 <= 30 ms); and delta events per reply;
* time to first token (request sent -> first delta; p50 / p99);
* RSS of the daemon (``VmRSS`` from ``/proc/<pid>/status``) idle after start-up and after the load
  (target idle <= 120 MB).

Each client uses its own conversation (turns of one conversation are serialised by design). The
clients stream through the daemon's own HTTP/1.1 client (``light_client`` in ``bench/common.py``), the
baseline too: with httpx they spent as much CPU as the daemon they measured (1.9 s against 1.75 s per
load, on the same two cores), and that contention was in their tail. Figures taken before
2026-12-05's fifth pass on issue 15 used httpx clients.

    .venv/bin/python -m bench.web_load [--clients 200] [--tokens 50] [--chunk-delay 0.02]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

from agent.providers import h1
from bench.common import (
    ROOT,
    StatusError,
    free_port,
    gc_figures,
    gc_summary,
    light_client,
    pct,
    post_lines,
    process_cpu,
    start_fake_llm,
    wait_healthy_at,
)
from tests.fakes.sse_scripts import split_text  # the fake's own cutting of its answer


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def one_chat(
    client: tuple[h1.Pool, str],
    conversation_id: str,
    tokens: int,
    chunk_delay: float,
    out: dict[str, list[float]],
    errors: list[str],
) -> None:
    sent = time.perf_counter()
    #: (arrival, characters of the reply received so far) per delta event
    deltas: list[tuple[float, int]] = []
    received = 0
    done = False
    name = ""
    body = {"message": "bench", "conversation_id": conversation_id}
    pool, prefix = client
    try:
        async for line in post_lines(pool, f"{prefix}/api/chat", body):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                if name == "start":
                    out["start"].append(time.perf_counter() - sent)
                elif name == "delta":
                    received += len(json.loads(line[5:])["text"])
                    deltas.append((time.perf_counter(), received))
                elif name == "done":
                    done = True
                elif name == "error":
                    errors.append(json.loads(line[5:]).get("code", "error"))
    except (StatusError, h1.HTTPError) as exc:
        errors.append(str(exc) if isinstance(exc, StatusError) else type(exc).__name__)
        return
    arrivals = token_arrivals(deltas, tokens)
    if not done or arrivals is None:
        errors.append(f"done={done} deltas={len(deltas)} chars={received}")
        return
    out["ttft"].append(arrivals[0] - sent)
    out["first_at"].append(arrivals[0])
    out["gaps"] += [b - a for a, b in itertools.pairwise(arrivals)]
    out["gap_at"] += arrivals[1:]
    out["deltas"].append(len(deltas))
    # how far the last token is behind the fake's schedule, counted from the stream's first token
    out["behind"].append(arrivals[-1] - arrivals[0] - (tokens - 1) * chunk_delay)


def token_arrivals(deltas: list[tuple[float, int]], tokens: int) -> list[float] | None:
    """When each of the fake's ``tokens`` chunks reached the client: the arrival of the ``delta``
    that completed it (the daemon joins chunks it read at once into one ``delta``, see docs/web.md).
    The fake's answer is known (``echo: bench`` and ``tok`` words, cut by ``split_text``); None when
    the text received is not all of it."""
    words = ["echo:", "bench"]
    text = " ".join(words + ["tok"] * (tokens - len(words)))
    ends = list(itertools.accumulate(len(piece) for piece in split_text(text, tokens)))
    if not deltas or deltas[-1][1] != len(text) or len(ends) != tokens:
        return None
    out: list[float] = []
    pending = iter(ends)
    end = next(pending)
    for arrival, received in deltas:
        while end <= received:
            out.append(arrival)
            end = next(pending, len(text) + 1)
    return out


async def one_direct(
    client: tuple[h1.Pool, str], tokens: int, out: dict[str, list[float]], errors: list[str]
) -> None:
    """The same stream straight from the fake LLM: the baseline of what this machine can do."""
    sent = time.perf_counter()
    arrivals: list[float] = []
    body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "bench"}]}
    pool, prefix = client
    async for line in post_lines(pool, f"{prefix}/chat/completions", body):
        if line.startswith("data:") and line != "data: [DONE]":
            choices = json.loads(line[5:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                arrivals.append(time.perf_counter())
    if len(arrivals) != tokens:
        errors.append(f"baseline chunks={len(arrivals)}")
        return
    out["ttft"].append(arrivals[0] - sent)
    out["gaps"] += [b - a for a, b in itertools.pairwise(arrivals)]


async def run_baseline(llm_url: str, clients: int, tokens: int) -> tuple[dict[str, list[float]], list[str]]:
    out: dict[str, list[float]] = {"ttft": [], "gaps": []}
    errors: list[str] = []
    async with light_client(llm_url, clients + 10) as client, anyio.create_task_group() as tg:
        for _ in range(clients):
            tg.start_soon(one_direct, client, tokens, out, errors)
    return out, errors


async def run_load(
    base_url: str, clients: int, tokens: int, chunk_delay: float
) -> tuple[dict[str, list[float]], list[str], float]:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        ids = []
        for i in range(clients):
            resp = await client.post("/api/conversations", json={"title": f"bench {i}"})
            resp.raise_for_status()
            ids.append(resp.json()["id"])
    out: dict[str, list[float]] = {
        "ttft": [],
        "gaps": [],
        "start": [],
        "deltas": [],
        "behind": [],
        "first_at": [],
        "gap_at": [],
    }
    errors: list[str] = []
    async with light_client(base_url, clients + 10) as light:
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for cid in ids:
                tg.start_soon(one_chat, light, cid, tokens, chunk_delay, out, errors)
        return out, errors, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--chunk-delay", type=float, default=0.02)
    parser.add_argument("--profile", metavar="FILE", help="run the daemon under cProfile, stats to FILE")
    args = parser.parse_args()
    # the machine is shared: a figure taken above 0.5 is a loaded one (printed again at the end)
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="hero-web-bench-"))
    web_port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fake, llm_url = start_fake_llm("--chunk-delay", str(args.chunk_delay), "--tokens", str(args.tokens))
    config = tmp / "hero-agent.toml"
    config.write_text(
        f"[web]\nport = {web_port}\n[telegram]\nenabled = false\n[memory]\nenabled = false\n"
        f'[llm]\nmodel = "fake-model"\n[logging]\nlevel = "warning"\n'
    )
    daemon_env = {
        **env,
        "HERO_AGENT_DATA_DIR": str(tmp / "data"),
        "OPENAI_BASE_URL": llm_url,
        "OPENAI_API_KEY": "sk-bench",
    }
    hero = [str(Path(sys.executable).parent / "hero-agent")]
    if args.profile:
        hero = [sys.executable, "-m", "cProfile", "-o", args.profile, "-m", "channels.main"]
    with (tmp / "daemon.log").open("wb") as log:
        daemon = subprocess.Popen(
            [*hero, "serve", "--config", str(config)], env=daemon_env, stdout=log, stderr=log, cwd=ROOT
        )
    try:
        base_url = f"http://127.0.0.1:{web_port}"
        anyio.run(wait_healthy_at, base_url, daemon)
        time.sleep(1.0)  # let start-up allocations settle before reading the idle RSS
        idle = rss_mb(daemon.pid)
        gc_idle = gc_figures(base_url)
        cpu_before = process_cpu(daemon.pid), process_cpu(fake.pid), time.process_time()
        out, errors, elapsed = anyio.run(run_load, base_url, args.clients, args.tokens, args.chunk_delay)
        cpu_used = (
            process_cpu(daemon.pid) - cpu_before[0],
            process_cpu(fake.pid) - cpu_before[1],
            time.process_time() - cpu_before[2],
        )
        loaded = rss_mb(daemon.pid)
        gc_after = gc_figures(base_url)
        # the fake alone, same clients and tokens, measured in the same run (the machine's floor)
        base, base_errors = anyio.run(run_baseline, llm_url, args.clients, args.tokens)
        errors += base_errors
    finally:
        daemon.terminate()
        fake.terminate()
        daemon.wait(30)
        fake.wait(30)
    added = [(g - args.chunk_delay) * 1000 for g in out["gaps"]]
    ttft = [t * 1000 for t in out["ttft"]]
    print(
        f"clients={args.clients} tokens={args.tokens} chunk_delay={args.chunk_delay * 1000:.0f}ms "
        f"wall={elapsed:.2f}s errors={len(errors)} daemon_exit={daemon.returncode}"
    )
    if errors:
        print("error kinds:", sorted(set(errors))[:10])
    if added:
        print(
            f"added latency per token: p50={pct(added, 0.5):.1f}ms p99={pct(added, 0.99):.1f}ms "
            f"mean={statistics.fmean(added):.1f}ms (n={len(added)})"
        )
        # where the tail is: tokens relayed while turns were still starting (before the last stream's
        # first token: the event loop also opens turns, builds prompts...) against those after
        ramp_end = max(out["first_at"])
        ramp = [a for a, at in zip(added, out["gap_at"], strict=True) if at <= ramp_end]
        steady = [a for a, at in zip(added, out["gap_at"], strict=True) if at > ramp_end]
        for label, part in (("while turns start", ramp), ("once all streams run", steady)):
            if part:
                print(f"  {label}: p50={pct(part, 0.5):.1f}ms p99={pct(part, 0.99):.1f}ms (n={len(part)})")
        print(f"time to first token: p50={pct(ttft, 0.5):.0f}ms p99={pct(ttft, 0.99):.0f}ms")
        behind = [t * 1000 for t in out["behind"]]
        print(
            f"last token behind the fake's schedule (from the stream's first token): "
            f"p50={pct(behind, 0.5):.0f}ms p99={pct(behind, 0.99):.0f}ms"
        )
        print(
            f"delta events per reply of {args.tokens} chunks: mean={statistics.fmean(out['deltas']):.1f} "
            f"min={min(out['deltas']):.0f} (chunks read at once go out as one delta)"
        )
        base_added = [(g - args.chunk_delay) * 1000 for g in base["gaps"]]
        base_ttft = [t * 1000 for t in base["ttft"]]
        print(
            f"baseline, the fake LLM alone: added per token p50={pct(base_added, 0.5):.1f}ms "
            f"p99={pct(base_added, 0.99):.1f}ms; first token p50={pct(base_ttft, 0.5):.0f}ms "
            f"p99={pct(base_ttft, 0.99):.0f}ms"
        )
        start = [t * 1000 for t in out["start"]]
        print(
            f"time to the start event (message stored): p50={pct(start, 0.5):.0f}ms "
            f"p99={pct(start, 0.99):.0f}ms"
        )
    per_token_us = cpu_used[0] / (args.clients * args.tokens) * 1e6
    print(
        f"CPU during the load: daemon {cpu_used[0]:.2f}s ({per_token_us:.0f}us per token "
        f"relayed, turns included), fake LLM {cpu_used[1]:.2f}s, this bench's clients {cpu_used[2]:.2f}s, "
        f"over {elapsed:.2f}s of wall time on "
        f"{os.cpu_count()} cores"
    )
    print(f"the daemon's garbage collections during the load, {gc_summary(gc_idle, gc_after)}")
    print(f"RSS hero-agent serve: idle={idle:.1f}MB after load={loaded:.1f}MB")
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}")
    raise SystemExit(1 if errors else 0)


if __name__ == "__main__":
    main()
