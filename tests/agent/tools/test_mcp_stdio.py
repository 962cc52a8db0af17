"""The MCP client against a real stdio MCP server subprocess (tests/fakes/mcp_stdio_server.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from agent.tools.mcp_client import MCPTool, namespaced_name, open_mcp_servers
from agent.tools.registry import ToolRegistry
from config.settings import MCPServerSettings

SERVER = Path(__file__).resolve().parents[2] / "fakes" / "mcp_stdio_server.py"

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def stdio_server(name: str = "fake", **kw: object) -> MCPServerSettings:
    return MCPServerSettings(name=name, transport="stdio", command=sys.executable, args=(str(SERVER),), **kw)  # type: ignore[arg-type]


async def test_lists_and_calls_tools_namespaced_per_server() -> None:
    registry = ToolRegistry()
    servers = (stdio_server("fake", env=(("FAKE_SECRET_VALUE", "from-config"),)), stdio_server("other"))
    with anyio.fail_after(30):
        async with open_mcp_servers(servers, registry) as started:
            assert started == ["fake", "other"]
            assert set(registry.names()) == {
                "fake__add",
                "fake__shout",
                "fake__fail",
                "fake__env_value",
                "other__add",
                "other__shout",
                "other__fail",
                "other__env_value",
            }
            add = registry.get("fake__add")
            assert isinstance(add, MCPTool)
            assert add.remote_name == "add"
            assert add.parameters["required"] == ["a", "b"]
            assert "fake" in add.description

            result = await add.run({"a": 2, "b": 40}, None)  # type: ignore[arg-type]
            assert (result.ok, result.content) == (True, "42")
            shout = await registry.get("other__shout").run({"text": "hi"}, None)  # type: ignore[union-attr, arg-type]
            assert shout.content == "HI!"
            env = await registry.get("fake__env_value").run({"name": "FAKE_SECRET_VALUE"}, None)  # type: ignore[union-attr, arg-type]
            assert env.content == "from-config"

            failed = await registry.get("fake__fail").run({"reason": "disk on fire"}, None)  # type: ignore[union-attr, arg-type]
            assert failed.ok is False
            assert "disk on fire" in failed.content


async def test_a_server_that_cannot_start_is_skipped() -> None:
    registry = ToolRegistry()
    broken = MCPServerSettings(name="broken", command="/nonexistent/mcp-server")
    crashing = MCPServerSettings(name="crashing", command=sys.executable, args=("-c", "raise SystemExit(3)"))
    with anyio.fail_after(30), capture_logs() as logs:
        async with open_mcp_servers((broken, crashing, stdio_server("ok")), registry) as started:
            assert started == ["ok"]
            assert all(name.startswith("ok__") for name in registry.names())
            assert len(registry) == 4
    unavailable = [e for e in logs if e["event"] == "mcp.server_unavailable"]
    assert [e["server"] for e in unavailable] == ["broken", "crashing"]
    assert all(e["log_level"] == "error" and e["reason"] for e in unavailable)


def test_namespaced_names_are_valid_tool_names() -> None:
    assert namespaced_name("files", "read.file") == "files__read_file"
    long = namespaced_name("s" * 40, "t" * 40)
    assert len(long) == 64
    assert long != namespaced_name("s" * 40, "t" * 41)
