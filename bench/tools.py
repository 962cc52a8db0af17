"""Tool registry overhead: ``python -m bench.tools [N]``.

Times ``ToolRegistry.execute`` on a trivial tool (schema validation, timeout scope, size cap, audit
write to a real embedded store in a temp dir) against calling the tool directly, and one MCP stdio
round trip through the registry. Prints p50/p99 in milliseconds.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import structlog

from agent.providers.base import ToolCall
from agent.tools.base import Tool, ToolCaller, ToolResult
from agent.tools.mcp_client import open_mcp_servers
from agent.tools.registry import ToolRegistry
from config.settings import MCPServerSettings, Settings, StoreSettings
from store import Scope, open_store

FAKE_MCP = Path(__file__).resolve().parents[1] / "tests" / "fakes" / "mcp_stdio_server.py"


class Echo(Tool):
    name = "echo"
    description = "Repeat the text."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": 100}},
        "required": ["text"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        return ToolResult(args["text"])


def report(label: str, samples: list[float]) -> float:
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"{label:<42} p50 {p50 * 1000:8.3f} ms   p99 {p99 * 1000:8.3f} ms   (n={len(samples)})")
    return p50


async def main(n: int) -> None:
    scope = Scope("bench", "user")
    with tempfile.TemporaryDirectory() as tmp:
        settings = replace(Settings(), store=StoreSettings(path=Path(tmp)))
        async with open_store(settings) as store:
            conv = await store.conversations.create(scope, "bench")
            ctx = ToolCaller(store, scope, conv.sid, "cli")
            tool = Echo()
            registry = ToolRegistry([tool])
            call = ToolCall("c", "echo", '{"text": "hello"}')

            direct: list[float] = []
            for _ in range(n):
                t0 = time.perf_counter()
                await tool.run({"text": "hello"}, ctx)
                direct.append(time.perf_counter() - t0)
            via: list[float] = []
            for _ in range(n):
                t0 = time.perf_counter()
                await registry.execute(call, ctx, timeout_s=10, max_result_chars=1000)
                via.append(time.perf_counter() - t0)
            base = report("direct tool.run", direct)
            full = report("registry.execute (validate + audit)", via)
            print(f"registry overhead per call: {(full - base) * 1000:.3f} ms (p50)")

            mcp_registry = ToolRegistry()
            server = MCPServerSettings(name="fake", command=sys.executable, args=(str(FAKE_MCP),))
            t0 = time.perf_counter()
            async with open_mcp_servers((server,), mcp_registry):
                startup = time.perf_counter() - t0
                print(f"MCP stdio server start-up (spawn + initialize + list): {startup:.2f} s")
                add = ToolCall("c", "fake__add", '{"a": 1, "b": 2}')
                rtt: list[float] = []
                for _ in range(min(n, 200)):
                    t0 = time.perf_counter()
                    await mcp_registry.execute(add, ctx, timeout_s=10, max_result_chars=1000)
                    rtt.append(time.perf_counter() - t0)
                report("MCP stdio call through the registry", rtt)


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 500)
