"""``hero-agent serve``: every enabled channel in one process, under one anyio task group.

Lifecycle::

    open store -> open agent -> start each enabled channel (in its own task) -> wait for SIGINT/SIGTERM
    -> stop every channel at once (each refuses new work, lets running turns finish up to its shutdown
    deadline, then cancels them: interrupted markers, consistent history) -> close the agent (flushes
    auto-memory) -> close the store -> exit 0

A channel that cannot start (port in use, bad bot token) fails the whole daemon fast: the channels
already started are stopped again, and :class:`~channels.base.ChannelStartError` reaches the command
line, which prints its one line and exits 1. A half-started daemon would be a surprise (a bot that
answers while its web page is dead), so there is no degraded mode.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskStatus

from channels.base import Channel, ChannelStartError
from channels.registry import CHANNELS

if TYPE_CHECKING:
    from agent.core import Agent
    from config import Settings

log = structlog.get_logger("hero.daemon")

#: added to the largest shutdown deadline before a channel's stop is abandoned
STOP_MARGIN_S = 15.0


def enabled_channels(settings: Settings) -> list[str]:
    """Names of the channels the configuration turns on, in start order."""
    return [name for name, cls in CHANNELS.items() if cls.enabled(settings)]


async def _run_channel(
    channel: Channel, stop: anyio.Event, stop_budget_s: float, *, task_status: TaskStatus[None]
) -> None:
    """Start ``channel``, report it started, serve until ``stop``, then stop it (also after a failed or
    partial start). Start and stop happen in this one task, as channels may require."""
    try:
        await channel.start()
        task_status.started()
        log.info("daemon.channel_started", channel=channel.name)
        await stop.wait()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(stop_budget_s) as budget:
            await channel.stop()
        if budget.cancelled_caught:
            log.error("daemon.channel_stop_timeout", channel=channel.name)
        else:
            log.info("daemon.channel_stopped", channel=channel.name)


async def run_channels(settings: Settings, agent: Agent, stop: anyio.Event) -> None:
    """Start the enabled channels, run them until ``stop`` is set, stop them all concurrently.

    Raises ChannelStartError (after stopping the started ones) when a channel cannot start.
    """
    names = enabled_channels(settings)
    if not names:
        raise ChannelStartError(
            "no channel is enabled: set [web] enabled = true or [telegram] enabled = true"
        )
    budget = max(settings.web.shutdown_deadline_s, settings.telegram.shutdown_deadline_s, 0.0) + STOP_MARGIN_S
    failure: ChannelStartError | None = None
    async with anyio.create_task_group() as tg:
        for name in names:
            channel = CHANNELS[name](settings, agent)
            try:
                await tg.start(_run_channel, channel, stop, budget)
            except ChannelStartError as exc:
                log.error("daemon.channel_failed", channel=name, error=str(exc))
                failure = exc
                stop.set()
                break
        if failure is None:
            log.info("daemon.ready", channels=names)
    if failure is not None:
        raise failure


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
                async with open_store(settings) as store, open_agent(settings, store) as agent:
                    log.info(
                        "daemon.starting", store=settings.store.engine, channels=enabled_channels(settings)
                    )
                    await run_channels(settings, agent, stop)
                    log.info("daemon.closing")
            finally:
                tg.cancel_scope.cancel()
    log.info("daemon.stopped")
    return 0
