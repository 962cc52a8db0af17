"""The web channel's ``GET /metrics``: the Agent's turn metrics (every channel) plus the HTTP counters
and open streams of this channel, in the Prometheus text format without a client library.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.metrics import Labels, TurnMetrics, _labels, counter_lines


@dataclass
class Metrics:
    """The web channel's own counters. Everything runs on one event loop: plain ints need no locks."""

    requests: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    active_streams: int = 0

    def request_finished(self, method: str, status: int) -> None:
        self.requests[_labels(method=method, status=str(status))] += 1

    def render(self, turns: TurnMetrics, extra: Sequence[str] = ()) -> str:
        """The whole ``/metrics`` text: the agent's metrics, ``extra`` lines (tool server health), and
        this channel's HTTP counters."""
        out = [*turns.render_lines(), *extra]
        out += counter_lines(
            "hero_http_requests_total", "HTTP requests answered, by method and status.", self.requests
        )
        out += [
            "# HELP hero_active_streams Streaming responses open right now.",
            "# TYPE hero_active_streams gauge",
            f"hero_active_streams {self.active_streams}",
        ]
        return "\n".join(out) + "\n"
