"""The health of the tool servers an agent depends on (MCP servers), for ``/readyz`` and ``/metrics``.

A server is ``running``; ``restarting`` after its connection died (a stdio server's process exited),
while it is restarted with backoff; or ``unavailable`` when it never started (it is then skipped, as
its tools were never known). Anything but ``running`` makes the agent *degraded*: it answers, without
that server's tools.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class ServerHealth:
    """One tool server's state and counts; the MCP client updates it, readers only read."""

    name: str
    state: str = "starting"
    #: connections that died while the server was running
    deaths: int = 0
    #: successful restarts after a death
    restarts: int = 0

    @property
    def healthy(self) -> bool:
        return self.state == "running"


def degraded(servers: Iterable[ServerHealth]) -> list[dict[str, str]]:
    """The servers that are not running, as ``/readyz`` shows them."""
    return [{"server": s.name, "state": s.state} for s in servers if not s.healthy]


def health_lines(servers: Iterable[ServerHealth]) -> list[str]:
    """Prometheus text: whether each server is up, and its deaths and restarts."""
    rows = sorted(servers, key=lambda s: s.name)
    out = [
        "# HELP hero_mcp_server_up Whether an MCP server is running (1) or not (0).",
        "# TYPE hero_mcp_server_up gauge",
    ]
    out += [f'hero_mcp_server_up{{server="{_esc(s.name)}"}} {int(s.healthy)}' for s in rows]
    out += [
        "# HELP hero_mcp_server_deaths_total MCP server connections that died mid-session.",
        "# TYPE hero_mcp_server_deaths_total counter",
    ]
    out += [f'hero_mcp_server_deaths_total{{server="{_esc(s.name)}"}} {s.deaths}' for s in rows]
    out += [
        "# HELP hero_mcp_server_restarts_total MCP servers restarted after their connection died.",
        "# TYPE hero_mcp_server_restarts_total counter",
    ]
    out += [f'hero_mcp_server_restarts_total{{server="{_esc(s.name)}"}} {s.restarts}' for s in rows]
    return out


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
