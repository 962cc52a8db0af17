"""``open_tools``: the registry an agent uses, built from ``[tools]``.

Built-ins are switched by ``tools.memory``, ``tools.datetime``, ``tools.search_conversations`` and
``tools.http_fetch``; MCP servers come from ``tools.mcp_servers`` and live as long as the ``async with``
(a server that fails to start is logged and skipped). Enter and exit it in one task: the MCP
transports are anyio task groups.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TextIO

from agent.tools.base import Tool
from agent.tools.builtin.clock import CurrentDateTimeTool
from agent.tools.builtin.memory import memory_tools
from agent.tools.builtin.search import SearchConversationsTool
from agent.tools.http_fetch import HttpFetchTool
from agent.tools.registry import ToolRegistry
from config.settings import Settings, ToolsSettings


def builtin_tools(settings: ToolsSettings) -> list[Tool]:
    """The built-in tools the settings switch on, in a stable order."""
    tools: list[Tool] = []
    if settings.memory:
        tools.extend(memory_tools())
    if settings.datetime:
        tools.append(CurrentDateTimeTool())
    if settings.search_conversations:
        tools.append(SearchConversationsTool())
    if settings.http_fetch:
        tools.append(HttpFetchTool(settings))
    return tools


@asynccontextmanager
async def open_tools(settings: Settings, *, errlog: TextIO | None = None) -> AsyncIterator[ToolRegistry]:
    """The registry with built-ins and every MCP server that started; servers stop on exit.

    ``errlog`` receives the stderr of stdio MCP servers (default: this process's stderr).
    """
    registry = ToolRegistry(builtin_tools(settings.tools))
    if not settings.tools.mcp_servers:
        yield registry
        return
    # Imported only when MCP servers are configured: the SDK costs ~1 s of start-up time.
    from agent.tools.mcp_client import open_mcp_servers  # noqa: PLC0415

    async with open_mcp_servers(settings.tools.mcp_servers, registry, errlog=errlog):
        yield registry
