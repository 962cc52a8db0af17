"""A tiny MCP server over stdio for the MCP client tests: ``python tests/fakes/mcp_stdio_server.py``.

Tools: ``add(a, b)``, ``shout(text)``, ``fail(reason)`` (a tool error), ``env.value(name)`` (reads
the server's environment, to check the client passes ``env``; its dotted name needs sanitising) and
``die()`` (the process exits mid-call) and ``junk(size)`` (text with NUL bytes, control characters and
``size`` more characters: output no store would take as is). Built on the official SDK's
``MCPServer`` (mcp 2.x's name for FastMCP).

``FAKE_MCP_DOWN_FILE=PATH`` in its environment: while that file exists, the server exits at once when
started (a server that stays dead after ``die()`` until the test removes the file).
"""

from __future__ import annotations

import logging
import os

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError


def build_server() -> MCPServer:
    server = MCPServer("fake-tools")

    @server.tool()
    def add(a: int, b: int) -> str:
        """Add two integers."""
        return str(a + b)

    @server.tool()
    def shout(text: str) -> str:
        """Upper-case the text and add an exclamation mark."""
        return text.upper() + "!"

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails with the given reason."""
        raise ToolError(reason)

    @server.tool(name="env.value")
    def env_value(name: str) -> str:
        """The value of one environment variable of the server process."""
        return os.environ.get(name, "<unset>")

    @server.tool()
    def junk(size: int = 0) -> str:
        """Text with NUL bytes and terminal control characters, then ``size`` filler characters."""
        return "before\x00after \x1b[31mred\x07 bell\x00" + "z" * size

    @server.tool()
    def die() -> str:
        """Ends the server process at once (to test a server that goes away)."""
        os._exit(3)

    return server


if __name__ == "__main__":
    down = os.environ.get("FAKE_MCP_DOWN_FILE")
    if down and os.path.exists(down):
        raise SystemExit(4)
    logging.disable(logging.WARNING)  # keep the test output free of the SDK's rich tracebacks
    build_server().run("stdio")
