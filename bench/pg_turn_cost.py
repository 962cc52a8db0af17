"""Where a turn's time goes on the postgres engine: the server's side by statement, and the CPU of both.

A real Agent (default tools, logging as the daemon's, the fake LLM in its own process) on the postgres
engine, a conversation of ``--size`` messages, ``--turns`` turns after 5 warm-up ones. A throwaway
cluster (fsync on) with ``pg_stat_statements`` loaded (PostgreSQL's contrib, in Debian's
``postgresql`` package) tracking nested statements and planning. Prints per turn: wall time, time in
the engine, this process's CPU, the CPU of all the cluster's processes (``/proc``: the backend's
parsing, planning and execution, the WAL writer...), then the statements by server time per turn
(planning and execution; parsing is not counted by ``pg_stat_statements``).

    .venv/bin/python -m bench.pg_turn_cost [--turns 200] [--size 200]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import anyio
import psycopg

from agent.core import Agent, TurnRequest
from agent.providers.openai import OpenAIProvider
from agent.tools.factory import open_tools
from bench.agent_turns import SCOPE, TEXT, TimedEngine, fill
from bench.common import fake_llm, tree_cpu
from config.logging import configure_logging
from config.settings import (
    LLMSettings,
    LoggingSettings,
    MemorySettings,
    Settings,
    StoreSettings,
    ToolsSettings,
)
from store import Store
from store.postgres.engine import PostgresEngine
from tests.store.postgres_fixtures import Cluster, make_cluster, remove_cluster

WARMUP = 5
STATEMENTS = (
    "SELECT calls, total_plan_time, total_exec_time, regexp_replace(query, '\\s+', ' ', 'g') "
    "FROM pg_stat_statements WHERE query NOT LIKE '%%pg_stat_statements%%' "
    "ORDER BY total_plan_time + total_exec_time DESC LIMIT 15"
)


def cluster_cpu_s(cluster: Cluster) -> float:
    """User + system CPU of the postmaster and its children (the backends, WAL writer, ...) so far."""
    return tree_cpu(int((cluster.data / "postmaster.pid").read_text().split()[0]))


async def run(cluster: Cluster, turns: int, size: int) -> None:
    url = cluster.url()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("CREATE EXTENSION pg_stat_statements")
    with fake_llm() as base_url, tempfile.TemporaryDirectory() as tmp:
        llm = LLMSettings(base_url=base_url, api_key="bench", model="fake-model", max_retries=0)
        settings = Settings(
            llm=llm,
            memory=MemorySettings(enabled=False),
            store=StoreSettings(path=Path(tmp)),
            tools=ToolsSettings(),
        )
        engine = TimedEngine(PostgresEngine(StoreSettings(engine="postgres", url=url, timeout_s=30.0)))
        provider = OpenAIProvider(llm)
        async with (
            Store(engine) as store,
            open_tools(settings) as registry,
            Agent(settings, store, provider, registry) as agent,
        ):
            conv = await agent.conversations.new(SCOPE, channel="cli")
            await fill(store, conv.sid, size)
            for i in range(WARMUP):
                async for _ in agent.handle(
                    TurnRequest(SCOPE, "cli", f"warm-up {i}", conversation_id=conv.sid)
                ):
                    pass
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute("SELECT pg_stat_statements_reset()")
            engine.spent = 0.0
            server_cpu, cpu, started = cluster_cpu_s(cluster), time.process_time(), time.perf_counter()
            for i in range(turns):
                request = TurnRequest(SCOPE, "cli", f"{TEXT} ({i})", conversation_id=conv.sid)
                async for _ in agent.handle(request):
                    pass
            per_turn = 1000 / turns
            print(
                f"per turn, ms: wall {(time.perf_counter() - started) * per_turn:.2f}, "
                f"in the engine {engine.spent * per_turn:.2f}, this process's CPU "
                f"{(time.process_time() - cpu) * per_turn:.2f}, the cluster's CPU "
                f"{(cluster_cpu_s(cluster) - server_cpu) * per_turn:.2f}"
            )
        await provider.aclose()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        rows = await (await conn.execute(STATEMENTS)).fetchall()
    print(f"{'calls':>6} {'plan ms':>8} {'exec ms':>8}  (per turn) statement")
    plan = execute = 0.0
    for calls, plan_ms, exec_ms, query in rows:
        plan, execute = plan + plan_ms / turns, execute + exec_ms / turns
        print(f"{calls:>6} {plan_ms / turns:>8.3f} {exec_ms / turns:>8.3f}  {query[:110]}")
    print(f"server time per turn (the statements above): planning {plan:.3f} ms, execution {execute:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--size", type=int, default=200)
    args = parser.parse_args()
    configure_logging(LoggingSettings(level="info", format="json"), stream=open(os.devnull, "w"))  # noqa: SIM115
    print(f"# load average (1 min) at start: {os.getloadavg()[0]:.2f}")
    cluster = make_cluster(
        "-c shared_preload_libraries=pg_stat_statements",
        "-c pg_stat_statements.track=all",
        "-c pg_stat_statements.track_planning=on",
    )
    try:
        print(f"# {cluster.version()}, a throwaway cluster on loopback, fsync on")
        anyio.run(run, cluster, args.turns, args.size)
    finally:
        remove_cluster(cluster)
    print(f"# load average (1 min) at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
