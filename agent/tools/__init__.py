"""Tools the model can call: the registry, the built-ins and MCP servers.

``agent.tools.factory.open_tools(settings)`` builds the registry the agent uses (built-ins per
``[tools]`` plus the configured MCP servers); it lives in its own module so that importing the
registry does not import the MCP client.
"""

from __future__ import annotations

from agent.tools.base import Tool, ToolCaller, ToolError, ToolResult
from agent.tools.registry import ToolRegistry

__all__ = ["Tool", "ToolCaller", "ToolError", "ToolRegistry", "ToolResult"]
