"""Long polling with a watchdog.

PTB's ``Updater`` already retries network errors inside its polling loop. What it does not do:

* recover from a ``Conflict`` (409: another process polls with the same token, or a webhook is set) by
  anything smarter than retrying forever; the watchdog logs it, backs off, and restarts polling, whose
  bootstrap removes a stale webhook;
* notice a poller that silently stopped (its task died, or requests hang): :class:`LivenessRequest`
  records when ``getUpdates`` last got any answer; no answer for ``poll_timeout + 60`` seconds restarts
  polling.

Restarts back off exponentially (``watchdog_backoff_s`` doubling up to 60 s) and reset after a
successful poll.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import time
from typing import Any

import anyio
import structlog
from telegram.error import Conflict, InvalidToken, NetworkError, TelegramError, TimedOut
from telegram.ext import Updater

from channels.telegram.botapi import BotAPIRequest
from config.settings import TelegramSettings

log = structlog.get_logger("channels.telegram")

MAX_BACKOFF_S = 60.0
#: consecutive network errors before a restart (PTB retries them on its own until then)
NETWORK_ERRORS_BEFORE_RESTART = 10


class LivenessRequest(BotAPIRequest):
    """The ``getUpdates`` transport: remembers when the Bot API last answered (any status)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_answer = time.monotonic()
        self.successes = 0

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        result = await super().do_request(*args, **kwargs)
        self.last_answer = time.monotonic()
        if result[0] == 200:
            self.successes += 1
        return result


class PollingWatchdog:
    """Starts, watches and restarts ``updater.start_polling``; see the module docstring."""

    def __init__(
        self,
        updater: Updater,
        request: LivenessRequest,
        settings: TelegramSettings,
        *,
        stall_after_s: float | None = None,
    ) -> None:
        self._updater = updater
        #: no answer from getUpdates for this long counts as a stalled poller
        self.stall_after_s = settings.poll_timeout_s + 60.0 if stall_after_s is None else stall_after_s
        self._request = request
        self._settings = settings
        self._restart = asyncio.Event()
        self._reason = ""
        self._network_errors = 0
        self._backoff = settings.watchdog_backoff_s
        self._successes_at_restart = 0
        self.restarts = 0
        self.conflicts = 0

    async def start_polling(self) -> None:
        self._network_errors = 0
        self._successes_at_restart = self._request.successes
        await self._updater.start_polling(
            timeout=dtm.timedelta(seconds=self._settings.poll_timeout_s),
            bootstrap_retries=0,
            allowed_updates=["message"],
            error_callback=self._on_error,
        )

    def _on_error(self, exc: TelegramError) -> None:
        """PTB's polling error callback (sync, must not raise)."""
        if isinstance(exc, Conflict):
            self.conflicts += 1
            log.warning("telegram.poll_conflict", error=str(exc)[:200])
            self._request_restart("conflict")
        elif isinstance(exc, NetworkError | TimedOut):
            self._network_errors += 1
            log.info("telegram.poll_network_error", error=type(exc).__name__, count=self._network_errors)
            if self._network_errors >= NETWORK_ERRORS_BEFORE_RESTART:
                self._request_restart("network")
        else:
            log.warning("telegram.poll_error", error=type(exc).__name__)

    def _request_restart(self, reason: str) -> None:
        if not self._restart.is_set():
            self._reason = reason
            self._restart.set()

    async def run(self) -> None:
        """Watch until cancelled."""
        stall_after = self.stall_after_s
        while True:
            with anyio.move_on_after(min(5.0, stall_after / 4)):
                await self._restart.wait()
            if self._request.successes > self._successes_at_restart:
                self._backoff = self._settings.watchdog_backoff_s  # healthy since the last restart
            if not self._restart.is_set():
                if time.monotonic() - self._request.last_answer < stall_after:
                    continue
                self._reason = "stalled"
            await self._restart_polling()

    async def _restart_polling(self) -> None:
        reason = self._reason
        self.restarts += 1
        log.warning("telegram.polling_restart", reason=reason, backoff_s=self._backoff)
        if self._updater.running:
            await self._updater.stop()
        while True:
            await anyio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            self._restart.clear()
            try:
                await self.start_polling()
            except InvalidToken:
                log.error("telegram.polling_token_rejected")
                raise
            except TelegramError as exc:
                log.warning("telegram.polling_restart_failed", error=type(exc).__name__)
                continue
            self._request.last_answer = time.monotonic()
            log.info("telegram.polling_restarted", reason=reason)
            return

    async def stop(self) -> None:
        if self._updater.running:
            await self._updater.stop()
