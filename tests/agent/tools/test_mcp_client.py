"""The MCP client against real MCP servers: a stdio subprocess and a streamable-HTTP uvicorn on
127.0.0.1 (both serve tests/fakes/mcp_stdio_server.py's tools), called through the registry."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from agent.providers.base import ToolCall
from agent.tools.base import ToolCaller, ToolResult
from agent.tools.factory import open_tools
from agent.tools.health import degraded, health_lines
from agent.tools.mcp_client import MCPTool, namespaced_name, open_mcp_servers
from agent.tools.registry import ToolRegistry
from config.logging import MASK, configure_logging, reset_logging
from config.settings import LoggingSettings, MCPServerSettings, Settings, ToolsSettings
from tests.agent.tools.conftest import SCOPE
from tests.fakes.mcp_http_server import serve_mcp_http
from tests.waiting import until

SERVER = Path(__file__).resolve().parents[2] / "fakes" / "mcp_stdio_server.py"
FAKE_TOOLS = ("add", "shout", "fail", "env_value", "junk", "die")

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def stdio_server(name: str, env: tuple[tuple[str, str], ...] = ()) -> MCPServerSettings:
    return MCPServerSettings(
        name=name, transport="stdio", command=sys.executable, args=(str(SERVER),), env=env
    )


async def call(registry: ToolRegistry, ctx: ToolCaller, tool: str, **args: object) -> ToolResult:
    with anyio.fail_after(20):
        return await registry.execute(
            ToolCall("c", tool, json.dumps(args)), ctx, timeout_s=15, max_result_chars=2000
        )


async def test_stdio_tools_are_listed_namespaced_and_called(ctx: ToolCaller) -> None:
    registry = ToolRegistry()
    servers = (stdio_server("fake", env=(("FAKE_SETTING", "from-config"),)), stdio_server("other"))
    with anyio.fail_after(30):
        async with open_mcp_servers(servers, registry) as started:
            assert started == ["fake", "other"]
            assert registry.names() == tuple(f"{s}__{t}" for s in ("fake", "other") for t in FAKE_TOOLS)
            add = registry.get("fake__add")
            assert isinstance(add, MCPTool) and add.remote_name == "add"
            assert add.parameters["required"] == ["a", "b"] and "'fake'" in add.description
            assert registry.get("fake__env_value").remote_name == "env.value"  # type: ignore[union-attr]

            assert await call(registry, ctx, "fake__add", a=2, b=40) == ToolResult("42")
            assert await call(registry, ctx, "other__shout", text="hi") == ToolResult("HI!")
            assert await call(registry, ctx, "fake__env_value", name="FAKE_SETTING") == ToolResult(
                "from-config"
            )
            assert await call(registry, ctx, "other__env_value", name="FAKE_SETTING") == ToolResult("<unset>")

            failed = await call(registry, ctx, "fake__fail", reason="disk on fire")
            assert not failed.ok and "disk on fire" in failed.content
            # the registry validates against the server's schema before anything is sent
            bad = await call(registry, ctx, "fake__add", a="two", b=1)
            assert bad.content.startswith(
                "error: invalid arguments for fake__add: 'two' is not of type 'integer'"
            )
    audit = [(a.tool, a.ok) for a in reversed((await ctx.store.records.list_audit(SCOPE)).items)]
    assert audit == [
        ("fake__add", True),
        ("other__shout", True),
        ("fake__env_value", True),
        ("other__env_value", True),
        ("fake__fail", False),
        ("fake__add", False),
    ]


async def test_streamable_http_server(ctx: ToolCaller) -> None:
    with anyio.fail_after(30):
        async with serve_mcp_http() as url:
            settings = MCPServerSettings(name="web", transport="http", url=url, headers=(("X-Api-Key", "k"),))
            registry = ToolRegistry()
            async with open_mcp_servers((settings,), registry) as started:
                assert started == ["web"]
                assert registry.names() == tuple(f"web__{t}" for t in FAKE_TOOLS)
                assert await call(registry, ctx, "web__add", a=1, b=2) == ToolResult("3")
                failed = await call(registry, ctx, "web__fail", reason="nope")
                assert not failed.ok and "nope" in failed.content


async def test_servers_that_cannot_start_are_logged_and_skipped(ctx: ToolCaller) -> None:
    broken = MCPServerSettings(name="broken", command="/nonexistent/mcp-server")
    crashing = MCPServerSettings(name="crashing", command=sys.executable, args=("-c", "raise SystemExit(3)"))
    silent = MCPServerSettings(
        name="silent", command=sys.executable, args=("-c", "import time; time.sleep(60)"), timeout_s=0.5
    )
    unreachable = MCPServerSettings(name="gone", transport="http", url="http://127.0.0.1:9/mcp", timeout_s=5)
    registry = ToolRegistry()
    with anyio.fail_after(30), capture_logs() as logs:
        async with open_mcp_servers(
            (broken, crashing, silent, unreachable, stdio_server("ok")), registry
        ) as up:
            assert up == ["ok"]
            assert registry.names() == tuple(f"ok__{t}" for t in FAKE_TOOLS)
            assert await call(registry, ctx, "ok__add", a=1, b=1) == ToolResult("2")
    unavailable = {e["server"]: e for e in logs if e["event"] == "mcp.server_unavailable"}
    assert sorted(unavailable) == ["broken", "crashing", "gone", "silent"]
    assert all(e["log_level"] == "error" and e["reason"] for e in unavailable.values())
    assert unavailable["silent"]["reason"] == "no answer within 0.5 s"
    assert "No such file" in unavailable["broken"]["reason"]


async def test_a_server_that_dies_is_logged_once_and_restarted_with_backoff(
    ctx: ToolCaller, tmp_path: Path
) -> None:
    """``die`` ends the server's process mid-call (a real subprocess exiting). While the down file
    exists the server cannot start again: the restart attempts fail and back off, logged once; the
    state is ``restarting``. Once the file is gone, the next attempt brings the server back."""
    down = tmp_path / "down"
    registry = ToolRegistry()
    with anyio.fail_after(40), capture_logs() as logs:
        async with open_mcp_servers(
            (stdio_server("fragile", env=(("FAKE_MCP_DOWN_FILE", str(down)),)),), registry
        ):
            health = registry.servers["fragile"]
            assert (health.state, health.deaths, health.restarts) == ("running", 0, 0)
            down.touch()
            died = await call(registry, ctx, "fragile__die")
            assert not died.ok and died.content.startswith("error: MCP server 'fragile' failed")
            after = await call(registry, ctx, "fragile__add", a=1, b=1)
            assert after.content == "error: MCP server 'fragile' is not running (restarting)"
            # the dead transport is torn down first
            await until(lambda: health.state == "restarting", timeout=40, what="the restarting state")
            assert health.deaths == 1
            # at least two failed restart attempts (after 1 s and 2 s), still one death logged
            await until(
                lambda: sum(e["event"] == "mcp.restart_failed" for e in logs) >= 2,
                timeout=40,
                interval=0.05,
                what="two failed restarts",
            )
            assert health.state == "restarting"
            down.unlink()
            await until(lambda: health.state == "running", timeout=40, interval=0.05, what="the restart")
            assert (health.deaths, health.restarts) == (1, 1)
            assert await call(registry, ctx, "fragile__add", a=1, b=1) == ToolResult("2")
    events = [e["event"] for e in logs if e["event"].startswith("mcp.")]
    assert events.count("mcp.server_died") == 1 and events.count("mcp.server_restarted") == 1
    [died_log] = [e for e in logs if e["event"] == "mcp.server_died"]
    assert died_log["log_level"] == "error" and died_log["server"] == "fragile"
    assert "exited" in died_log["reason"]


async def test_the_servers_health_is_kept_in_the_registry(ctx: ToolCaller) -> None:
    broken = MCPServerSettings(name="broken", command="/nonexistent/mcp-server")
    registry = ToolRegistry()
    with anyio.fail_after(30):
        async with open_mcp_servers((broken, stdio_server("ok")), registry):
            assert {n: h.state for n, h in registry.servers.items()} == {
                "broken": "unavailable",
                "ok": "running",
            }
            assert degraded(registry.servers.values()) == [{"server": "broken", "state": "unavailable"}]
            lines = health_lines(registry.servers.values())
            assert 'hero_mcp_server_up{server="broken"} 0' in lines
            assert 'hero_mcp_server_up{server="ok"} 1' in lines
            assert 'hero_mcp_server_restarts_total{server="ok"} 0' in lines


async def test_open_tools_adds_mcp_servers_to_the_builtins(ctx: ToolCaller) -> None:
    settings = Settings(tools=ToolsSettings(http_fetch=False, mcp_servers=(stdio_server("fake"),)))
    with anyio.fail_after(30):
        async with open_tools(settings) as registry:
            assert "memory_save" in registry.names() and "fake__shout" in registry.names()
            assert await call(registry, ctx, "fake__shout", text="ok") == ToolResult("OK!")


def test_namespaced_names_are_valid_tool_names() -> None:
    assert namespaced_name("files", "read.file") == "files__read_file"
    long = namespaced_name("s" * 40, "t" * 40)
    assert len(long) == 64
    assert long != namespaced_name("s" * 40, "t" * 41)


@pytest.mark.parametrize("level", ["info", "debug"])
async def test_mcp_http_chatter_and_session_ids_stay_out_of_the_logs(ctx: ToolCaller, level: str) -> None:
    """Through the real SDK against a real streamable-HTTP server: at info the SDK's HTTP client
    (``httpx2``) and its "Received session ID" lines are quiet; at debug they show, the id masked."""
    buf = io.StringIO()
    configure_logging(LoggingSettings(level=level), stream=buf, force_json=True)
    try:
        with anyio.fail_after(30):
            async with serve_mcp_http() as url:
                settings = MCPServerSettings(name="web", transport="http", url=url)
                async with open_mcp_servers((settings,), ToolRegistry()) as started:
                    assert started == ["web"]
    finally:
        reset_logging()
    records = [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]
    library = [r for r in records if str(r.get("logger", "")).startswith(("httpx2", "mcp"))]
    if level == "info":
        assert library == []
    else:
        sessions = [str(r["event"]) for r in library if "session ID" in str(r["event"])]
        assert sessions and all(s.endswith(f"session ID: {MASK}") for s in sessions)
        assert any(r["logger"] == "httpx2" for r in library)
