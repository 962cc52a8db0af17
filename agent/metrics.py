"""Turn metrics of every channel, kept by the :class:`~agent.core.Agent` and rendered in the Prometheus
text format (the web channel's ``GET /metrics`` shows them, with its own HTTP counters).

Every turn and command that goes through ``Agent.handle`` is counted, whatever the channel (``cli``,
``telegram``, ``web``, ``api``): under ``hero-agent serve`` one Agent serves them all. Everything runs
on one event loop, so plain ints need no locks.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

from agent import switching
from agent.events import Done, TurnEvent, TurnFailed
from agent.gcpause import GC_STATS
from agent.prompt.incremental import HISTORY_STATS
from agent.providers.base import TEXT_STATS, TextStats
from agent.providers.h1 import WIRE_STATS
from agent.tools.storable import ResultCounts
from agent.turn.early import EARLY_STATS
from store import GROUP_BUCKETS, CommitStats, Engine, LeaseStats

#: seconds; turn latencies span tool calls and long replies
TURN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: seconds; time to the first streamed token
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Labels = tuple[tuple[str, str], ...]


def _labels(**kv: str) -> Labels:
    return tuple(sorted(kv.items()))


def _fmt_labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in items)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class Histogram:
    """A cumulative-bucket histogram per label set."""

    buckets: tuple[float, ...]
    counts: dict[Labels, list[int]] = field(default_factory=dict)
    sums: dict[Labels, float] = field(default_factory=lambda: defaultdict(float))

    def observe(self, value: float, labels: Labels) -> None:
        row = self.counts.setdefault(labels, [0] * (len(self.buckets) + 1))
        row[bisect.bisect_left(self.buckets, value)] += 1
        self.sums[labels] += value

    def render(self, name: str) -> list[str]:
        lines: list[str] = []
        for labels, row in sorted(self.counts.items()):
            running = 0
            for bound, n in zip(self.buckets, row, strict=False):
                running += n
                lines.append(f"{name}_bucket{_fmt_labels(labels, (('le', _num(bound)),))} {running}")
            running += row[-1]
            lines.append(f"{name}_bucket{_fmt_labels(labels, (('le', '+Inf'),))} {running}")
            lines.append(f"{name}_sum{_fmt_labels(labels)} {_num(self.sums[labels])}")
            lines.append(f"{name}_count{_fmt_labels(labels)} {running}")
        return lines


@dataclass
class Counters:
    """Named counters any part of the daemon may bump (Telegram delivery fallbacks, MCP server restarts,
    channel crashes ...), rendered after the turn metrics. A name is declared once with its help text;
    bumping an undeclared name is a programming error (a typo would otherwise make a silent series)."""

    help: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[Labels, int]] = field(default_factory=dict)

    def declare(self, name: str, help_text: str) -> None:
        """Make ``name`` known (idempotent), so it renders with its help even before the first bump."""
        self.help.setdefault(name, help_text)
        self.values.setdefault(name, defaultdict(int))

    def inc(self, name: str, n: int = 1, **labels: str) -> None:
        self.values[name][_labels(**labels)] += n

    def get(self, name: str, **labels: str) -> int:
        return self.values.get(name, {}).get(_labels(**labels), 0)

    def render_lines(self) -> list[str]:
        out: list[str] = []
        for name in sorted(self.help):
            out += counter_lines(name, self.help[name], self.values[name])
        return out


@dataclass
class TurnMetrics:
    """Counters and histograms of the turns an Agent ran, plus the daemon's other :class:`Counters`."""

    turns: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    tokens: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    retries: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    turn_seconds: Histogram = field(default_factory=lambda: Histogram(TURN_BUCKETS))
    ttft_seconds: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    counters: Counters = field(default_factory=Counters)
    #: the tool registry's repairs of tool output (the Agent passes its registry's counts)
    tool_results: ResultCounts = field(default_factory=ResultCounts)
    #: the store engine, whose own event counts (a remote engine's failed attempts) are shown too
    store_engine: Engine | None = None
    #: the store's turn-lock and cut-turn counters (the Agent's Store keeps them)
    leases: LeaseStats = field(default_factory=LeaseStats)
    #: what a channel is doing when that is more than up or down (Telegram: ``polling``, ``standby``
    #: behind another daemon's poller, ``webhook``): shown in ``/readyz`` and as a gauge
    channel_states: dict[str, str] = field(default_factory=dict)

    def turn_finished(
        self,
        channel: str,
        outcome: str,
        *,
        seconds: float,
        ttft: float | None,
        prompt_tokens: int,
        completion_tokens: int,
        error_code: str = "",
    ) -> None:
        """One turn ended; ``outcome`` is complete | error | interrupted | command."""
        self.turns[_labels(channel=channel, outcome=outcome)] += 1
        if error_code:
            self.errors[_labels(channel=channel, code=error_code)] += 1
        if outcome != "command":
            self.turn_seconds.observe(seconds, _labels(channel=channel))
        if ttft is not None:
            self.ttft_seconds.observe(ttft, _labels(channel=channel))
        if prompt_tokens:
            self.tokens[_labels(channel=channel, kind="prompt")] += prompt_tokens
        if completion_tokens:
            self.tokens[_labels(channel=channel, kind="completion")] += completion_tokens

    def retried(self, channel: str) -> None:
        """The provider was retried during a turn (the channel showed "retrying (n/max)")."""
        self.retries[_labels(channel=channel)] += 1

    def refused(self, channel: str, code: str) -> None:
        """A turn refused before it started (invalid input, shutting down)."""
        self.turn_finished(
            channel, "error", seconds=0.0, ttft=None, prompt_tokens=0, completion_tokens=0, error_code=code
        )

    def turn_ended(self, channel: str, final: TurnEvent | None, seconds: float, ttft: float | None) -> None:
        """A turn ended with ``final`` (None: its consumer went away first, which cancels it)."""
        if isinstance(final, Done):
            outcome, code = "complete", ""
        elif isinstance(final, TurnFailed):
            outcome, code = ("interrupted" if final.code == "cancelled" else "error"), final.code
        else:
            outcome, code = "interrupted", "cancelled"
        done = final if isinstance(final, Done) else None
        self.turn_finished(
            channel,
            outcome,
            seconds=seconds,
            ttft=ttft,
            prompt_tokens=done.prompt_tokens if done else 0,
            completion_tokens=done.completion_tokens if done else 0,
            error_code=code,
        )

    def render_lines(self) -> list[str]:
        out: list[str] = []
        counters = (
            ("hero_turns_total", "Turns served, by channel and outcome.", self.turns),
            (
                "hero_turn_errors_total",
                "Turns that ended in an error, by channel and error code.",
                self.errors,
            ),
            ("hero_tokens_total", "LLM tokens used by turns, by channel and kind.", self.tokens),
            (
                "hero_provider_retries_total",
                "Provider calls retried during turns (before any text was shown), by channel.",
                self.retries,
            ),
        )
        for name, help_text, values in counters:
            out += counter_lines(name, help_text, values)
        repairs = (
            (
                "hero_tool_results_sanitised_total",
                "Tool results with characters no store takes (NUL, controls, lone surrogates) replaced.",
                self.tool_results.sanitised,
            ),
            (
                "hero_tool_results_truncated_total",
                "Tool results cut at agent.max_tool_result_chars.",
                self.tool_results.truncated,
            ),
        )
        for name, help_text, by_tool in repairs:
            out += counter_lines(name, help_text, {_labels(tool=t): n for t, n in by_tool.items()})
        out += self._store_lines()
        out += lease_lines(self.leases)
        out += text_lines(TEXT_STATS)
        if self.channel_states:
            out += [
                "# HELP hero_channel_state What a channel is doing (1 for its current state), by channel.",
                "# TYPE hero_channel_state gauge",
                *(
                    f"hero_channel_state{_fmt_labels(_labels(channel=c, state=st))} 1"
                    for c, st in sorted(self.channel_states.items())
                ),
            ]
        return [
            *out,
            "# HELP hero_turn_duration_seconds Turn latency from request to the final event.",
            "# TYPE hero_turn_duration_seconds histogram",
            *self.turn_seconds.render("hero_turn_duration_seconds"),
            "# HELP hero_time_to_first_token_seconds Time from request to the first streamed text.",
            "# TYPE hero_time_to_first_token_seconds histogram",
            *self.ttft_seconds.render("hero_time_to_first_token_seconds"),
            *self.counters.render_lines(),
            *WIRE_STATS.lines(),
            *HISTORY_STATS.lines(),
            *EARLY_STATS.lines(),
            *GC_STATS.lines(),
            *switching.lines(),
        ]

    def _store_lines(self) -> list[str]:
        """The engine's commits (the embedded one) and a remote engine's failed attempts and
        unreachable calls (an engine without counters: none)."""
        stats = self.store_engine.commit_stats() if self.store_engine is not None else None
        commits = commit_lines(self.store_engine.name, stats) if self.store_engine and stats else []
        return commits + self._remote_lines()

    def _remote_lines(self) -> list[str]:
        events = self.store_engine.counters() if self.store_engine is not None else {}
        if self.store_engine is None or not events:
            return []
        engine = self.store_engine.name
        gauges = self.store_engine.gauges()
        pool = (
            [
                "# HELP hero_store_pool_connections The store engine's connection pool: open, in use.",
                "# TYPE hero_store_pool_connections gauge",
                *(
                    f"hero_store_pool_connections{_fmt_labels(_labels(engine=engine, state=k))} {n}"
                    for k, n in sorted(gauges.items())
                ),
            ]
            if gauges
            else []
        )
        core = {_labels(engine=engine, event=k[5:]): n for k, n in events.items() if k.startswith("core:")}
        prep = {
            _labels(engine=engine, event=k[9:]): n for k, n in events.items() if k.startswith("prepared:")
        }
        events = {k: n for k, n in events.items() if not k.startswith(("core:", "prepared:"))}
        failed = {_labels(engine=engine, reason=r): n for r, n in events.items() if r != "unreachable"}
        core_lines = (
            counter_lines(
                "hero_store_core_fallbacks_total",
                "What the osis client did itself on a generated server (core mode): seq_assigned, "
                "scope_refusals, block_reads, seq_repairs, undeclared_fields_sent.",
                core,
            )
            if core
            else []
        )
        prep_lines = (
            counter_lines(
                "hero_store_prepared_total",
                "postgres: statements prepared on the server's connections, deallocated (beyond the "
                "per-connection bound), resets (DEALLOCATE ALL after a failure), refused (sent as text).",
                prep,
            )
            if prep
            else []
        )
        return (
            core_lines
            + prep_lines
            + counter_lines(
                "hero_store_attempts_failed_total",
                "Store calls' attempts that failed (deadline, timeout, connection, gateway; postgres: "
                "connection, serialization, unknown_commit: a write retried under its request key after "
                "its COMMIT went unanswered), retried or not.",
                failed,
            )
            + counter_lines(
                "hero_store_calls_unreachable_total",
                "Store calls that failed after every attempt (StoreUnavailable).",
                {_labels(engine=engine): events.get("unreachable", 0)},
            )
            + pool
        )


def lease_lines(stats: LeaseStats) -> list[str]:
    """The turn-lock counters: take-overs by reason (always both, so a rate can be taken from 0),
    renewals, leases lost, and the interrupted markers written by kind."""
    takeovers = {_labels(reason=r): stats.takeovers.get(r, 0) for r in ("dead_holder", "lapsed")}
    markers = {_labels(kind=k): stats.markers.get(k, 0) for k in ("user", "tool")}
    return [
        *counter_lines(
            "hero_lease_takeovers_total",
            "Turn locks taken over from another holder: dead_holder (a gone process of this host), "
            "lapsed (its lease expired).",
            takeovers,
        ),
        *counter_lines("hero_lease_renewals_total", "Turn lock lease renewals.", {(): stats.renewals}),
        *counter_lines(
            "hero_lease_lost_total", "Held turn locks lost to another holder after lapsing.", {(): stats.lost}
        ),
        *counter_lines(
            "hero_stop_requests_total",
            "/stop across processes: written (for a turn another process runs), seen (for a turn of "
            "this process, which was then cancelled).",
            {_labels(event="written"): stats.stops_written, _labels(event="seen"): stats.stops_seen},
        ),
        *counter_lines(
            "hero_interrupted_markers_total",
            "Marks of cut turns written: user (an interrupted answer), tool (an interrupted result).",
            markers,
        ),
    ]


def text_lines(stats: TextStats) -> list[str]:
    """The providers' streamed text: events read, and chunks handed on (events read together are
    joined into one chunk, one ``delta`` on the web: the difference is the coalescing)."""
    return [
        "# HELP hero_provider_text_events_total Text events the LLM providers streamed.",
        "# TYPE hero_provider_text_events_total counter",
        f"hero_provider_text_events_total {stats.events}",
        "# HELP hero_provider_text_chunks_total Text chunks handed to turns (the text events of one"
        " network read joined into one).",
        "# TYPE hero_provider_text_chunks_total counter",
        f"hero_provider_text_chunks_total {stats.chunks}",
        "# HELP hero_text_deltas_total Text deltas handed to channels (one SSE delta each on the web);"
        " chunks waiting together for a busy consumer are joined into one.",
        "# TYPE hero_text_deltas_total counter",
        f"hero_text_deltas_total {stats.deltas}",
    ]


def commit_lines(engine: str, stats: CommitStats) -> list[str]:
    """The engine's write transactions: commits, the fsyncs among them, and the batches per group
    commit as a histogram (sum: batches, count: groups)."""
    labels = _labels(engine=engine)
    out = counter_lines("hero_store_commits_total", "Write transactions committed.", {labels: stats.commits})
    out += counter_lines(
        "hero_store_fsyncs_total", "Commits that waited for the disk (fsync).", {labels: stats.fsyncs}
    )
    out += counter_lines(
        "hero_store_early_answers_total",
        "Write batches answered before their commit (a turn's opening: its request is built while"
        " the commit's fsync runs; nothing is acknowledged before the commit returned).",
        {labels: stats.early},
    )
    out += counter_lines(
        "hero_store_early_commit_failures_total",
        "Of those, batches whose commit then failed (the turn failed; nothing was acknowledged).",
        {labels: stats.early_failed},
    )
    name = "hero_store_group_commit_batches"
    out += [
        f"# HELP {name} Write batches per group commit (one transaction, one fsync for all of them).",
        f"# TYPE {name} histogram",
    ]
    running = 0
    for bound, n in zip(GROUP_BUCKETS, stats.groups, strict=False):
        running += n
        out.append(f"{name}_bucket{_fmt_labels(labels, (('le', _num(bound)),))} {running}")
    running += stats.groups[-1]
    out.append(f"{name}_bucket{_fmt_labels(labels, (('le', '+Inf'),))} {running}")
    out.append(f"{name}_sum{_fmt_labels(labels)} {stats.batches}")
    out.append(f"{name}_count{_fmt_labels(labels)} {running}")
    if stats.wal_retries is not None:
        out += counter_lines(
            "hero_store_wal_switch_retries_total",
            "Opening the database file: tries of the switch to WAL made again while another process"
            " was making it (processes opening a new data dir at the same moment).",
            {labels: stats.wal_retries},
        )
    if stats.writer_restarts is not None:
        out += counter_lines(
            "hero_store_writer_process_restarts_total",
            'The embedded engine\'s writer process ([store] writer = "process"): started again after'
            " one ended (its calls in flight failed as unavailable).",
            {labels: stats.writer_restarts},
        )
    if stats.deferred_index:
        out += counter_lines(
            "hero_store_indexed_messages_total",
            "Messages full-text indexed after the transaction that stored them (off the turn's path).",
            {labels: stats.indexed_rows},
        )
        out += counter_lines(
            "hero_store_index_runs_total",
            "Runs of that indexing: while the store's thread was idle, or before a search of messages.",
            {
                _labels(engine=engine, when="idle"): stats.index_runs_idle,
                _labels(engine=engine, when="search"): stats.index_runs_search,
            },
        )
    return out


def counter_lines(name: str, help_text: str, values: dict[Labels, int]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    return lines + [f"{name}{_fmt_labels(labels)} {n}" for labels, n in sorted(values.items())]
