"""The agent's composition: provider, tools (MCP servers included) and the :class:`Agent`, opened and
closed together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agent.core import Agent
from agent.providers.factory import build_provider
from agent.tools.factory import open_tools
from config.settings import Settings
from store import Store


@asynccontextmanager
async def open_agent(settings: Settings, store: Store) -> AsyncIterator[Agent]:
    """An opened Agent on ``store``; on exit pending auto-memory work is flushed, MCP servers are
    stopped and the provider's connections closed, also after a partial start."""
    provider = build_provider(settings.llm)
    try:
        async with open_tools(settings) as tools, Agent(settings, store, provider, tools) as agent:
            yield agent
    finally:
        await provider.aclose()
