"""``hero-agent serve``: every enabled channel in one process, under one anyio task group.

Lifecycle::

    open store -> open agent -> ping the provider (warn, never stop: channels.startup)
    -> start each enabled channel (in its own task) -> wait for SIGINT/SIGTERM
    -> stop every channel at once (each refuses new work, lets running turns finish up to its shutdown
    deadline, then cancels them: interrupted markers, consistent history) -> close the agent (flushes
    auto-memory) -> close the store -> exit 0

A channel that cannot start (port in use, bad bot token) fails the whole daemon fast: the channels
already started are stopped again, and :class:`~channels.base.ChannelStartError` reaches the command
line, which prints its one line and exits 1. A half-started daemon would be a surprise (a bot that
answers while its web page is dead), so there is no degraded mode.

The same holds after start: a channel whose server dies (:meth:`Channel.serving` raises
:class:`~channels.base.ChannelCrashed`: uvicorn's task ended, its listening socket was closed) stops
the daemon like a signal would, every channel draining as usual, and the crash reaches the command line
(one line, exit 1) so that the supervisor restarts the daemon. Outages of what a channel talks to (the
Bot API, the network) are not crashes: channels retry those with backoff and the daemon runs on.
Crashes are counted in ``hero_channel_crashes_total``.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskStatus

from agent.gcpause import collect_in_quiet, freeze_after_startup
from agent.switching import shorten_switch_interval
from channels.base import Channel
from channels.errors import ChannelCrashed, ChannelStartError
from channels.registry import CHANNELS
from channels.startup import check_provider, print_banner, startup_facts
from store import StoreError

if TYPE_CHECKING:
    from agent.core import Agent
    from config import Settings
    from store import Store

log = structlog.get_logger("hero.daemon")

#: added to the largest shutdown deadline before a channel's stop is abandoned
STOP_MARGIN_S = 15.0
CHANNEL_CRASHES = "hero_channel_crashes_total"
CHANNEL_CRASHES_HELP = "Channels that stopped serving on their own (the daemon then exits 1), by channel."


def enabled_channels(settings: Settings) -> list[str]:
    """Names of the channels the configuration turns on, in start order."""
    return [name for name, cls in CHANNELS.items() if cls.enabled(settings)]


async def _run_channel(
    channel: Channel,
    stop: anyio.Event,
    stop_budget_s: float,
    crashes: list[ChannelCrashed] | None = None,
    *,
    task_status: TaskStatus[None],
) -> None:
    """Start ``channel``, report it started, serve until ``stop`` (or until it crashes: then the crash
    goes to ``crashes`` and ``stop`` is set for every channel), then stop it (also after a failed or
    partial start). Start and stop happen in this one task, as channels may require."""
    try:
        await channel.start()
        task_status.started()
        log.info("daemon.channel_started", channel=channel.name)
        crash = await _serve_until(channel, stop)
        if crash is not None:
            log.error("daemon.channel_crashed", channel=channel.name, error=str(crash))
            channel.agent.metrics.counters.inc(CHANNEL_CRASHES, channel=channel.name)
            if crashes is not None:
                crashes.append(crash)
            stop.set()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(stop_budget_s) as budget:
            await channel.stop()
        if budget.cancelled_caught:
            log.error("daemon.channel_stop_timeout", channel=channel.name)
        else:
            log.info("daemon.channel_stopped", channel=channel.name)


async def _serve_until(channel: Channel, stop: anyio.Event) -> ChannelCrashed | None:
    """Wait for ``stop``; the channel's crash instead, when :meth:`Channel.serving` reports one first."""
    crash: ChannelCrashed | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal crash
            try:
                await channel.serving()
                crash = ChannelCrashed(f"{channel.name}: stopped serving")
            except ChannelCrashed as exc:
                crash = exc
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        await stop.wait()
        tg.cancel_scope.cancel()
    return crash


async def run_channels(
    settings: Settings, agent: Agent, stop: anyio.Event, ready_facts: Mapping[str, str] | None = None
) -> None:
    """Start the enabled channels, run them until ``stop`` is set, stop them all concurrently.
    ``ready_facts`` (see :mod:`channels.startup`) go into the ``daemon.ready`` event and the banner.

    Raises ChannelStartError (after stopping the started ones) when a channel cannot start, and
    ChannelCrashed (after stopping them all) when a started channel stopped serving on its own.
    """
    names = enabled_channels(settings)
    if not names:
        raise ChannelStartError(
            "no channel is enabled: set [web] enabled = true or [telegram] enabled = true"
        )
    budget = max(settings.web.shutdown_deadline_s, settings.telegram.shutdown_deadline_s, 0.0) + STOP_MARGIN_S
    failure: ChannelStartError | None = None
    crashes: list[ChannelCrashed] = []
    agent.metrics.counters.declare(CHANNEL_CRASHES, CHANNEL_CRASHES_HELP)
    async with anyio.create_task_group() as tg:
        for name in names:
            channel = CHANNELS[name](settings, agent)
            try:
                await tg.start(_run_channel, channel, stop, budget, crashes)
            except ChannelStartError as exc:
                log.error("daemon.channel_failed", channel=name, error=str(exc))
                failure = exc
                stop.set()
                break
        if failure is None:
            # everything start-up loads is loaded: the collector stops scanning it (agent/gcpause.py)
            freeze_after_startup()
            tg.start_soon(_collect_in_quiet, agent, stop)
            # the store's worker gets the GIL back sooner from a busy loop (agent/switching.py)
            shorten_switch_interval()
            facts = dict(ready_facts or {})
            log.info("daemon.ready", **{**facts, "channels": names})
            if facts:
                print_banner(facts)
    if failure is not None:
        raise failure
    if crashes:
        raise crashes[0]


async def _collect_in_quiet(agent: Agent, stop: anyio.Event) -> None:
    """Full collections in quiet moments (agent/gcpause.py) until ``stop``."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(collect_in_quiet, lambda: agent.busy)
        await stop.wait()
        tg.cancel_scope.cancel()


async def _mark_cut_turns(store: Store) -> None:
    """The turns a dead process of this host held (a crashed daemon, a killed ``ask``) get their
    interrupted marks now, before any channel takes a message (see store.api.leases)."""
    try:
        marked = await store.leases.mark_dead_holders_turns()
    except StoreError as exc:  # the conversations' next turns mark them instead
        log.warning("daemon.cut_turns_unmarked", error=type(exc).__name__)
        return
    if marked:
        log.info("daemon.cut_turns_marked", conversations=marked)


async def serve(settings: Settings) -> int:
    """The daemon's main: returns 0 after a signal-driven shutdown (errors raise, see module docs)."""
    # imported here so that importing the registry (for `--help`) does not load providers and engines
    from agent.factory import open_agent  # noqa: PLC0415
    from store import open_store  # noqa: PLC0415

    stop = anyio.Event()
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                async for signum in signals:
                    log.info("daemon.signal", signal=signal.Signals(signum).name, draining=not stop.is_set())
                    stop.set()

            tg.start_soon(watch_signals)
            try:
                async with open_store(settings, daemon=True) as store, open_agent(settings, store) as agent:
                    names = enabled_channels(settings)
                    log.info("daemon.starting", store=settings.store.engine, channels=names)
                    problem = await check_provider(agent.provider)
                    await _mark_cut_turns(store)
                    await run_channels(settings, agent, stop, startup_facts(settings, names, problem))
                    log.info("daemon.closing")
            finally:
                tg.cancel_scope.cancel()
    log.info("daemon.stopped")
    return 0
