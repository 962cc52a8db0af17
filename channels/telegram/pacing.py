"""Our own pacing of Bot API sends, so that Telegram's flood limits are rarely hit.

Telegram allows about one message (or edit) per second in a chat and about 30 per second over all
chats; beyond that it answers 429 with ``retry_after``. Two pieces keep us inside:

* :class:`GlobalLimiter`: a GCRA token bucket shared by all chats. Final deliveries wait for a slot
  (``acquire``); intermediate streaming edits only take a free one (``try_acquire``) and are skipped
  otherwise, so a busy bot drops cosmetic edits, never answers.
* :class:`ChatPacer`: per chat, the earliest time of the next send or edit, pushed out by our interval
  and by any ``retry_after`` Telegram sent for that chat. A 429 in one chat never slows another.
"""

from __future__ import annotations

import time

import anyio


class GlobalLimiter:
    """At most ``rate`` operations per second on average, with bursts of ``burst``."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._tolerance = self._interval * max(burst - 1, 0)
        self._tat = 0.0  # theoretical arrival time of the next operation
        self._lock = anyio.Lock()

    def try_acquire(self) -> bool:
        """Take a slot only if one is free now (never waits)."""
        if not self._interval:
            return True
        now = time.monotonic()
        tat = max(self._tat, now)
        if tat - self._tolerance > now:
            return False
        self._tat = tat + self._interval
        return True

    async def acquire(self) -> None:
        """Reserve the next slot and wait for it (FIFO among waiters)."""
        if not self._interval:
            return
        async with self._lock:
            now = time.monotonic()
            tat = max(self._tat, now)
            self._tat = tat + self._interval
            wait = tat - self._tolerance - now
        if wait > 0:
            await anyio.sleep(wait)


class ChatPacer:
    """Per-chat spacing of sends and edits, and the chat's flood-control block."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self.blocked_until = 0.0

    def ready(self) -> bool:
        """Whether a send or edit may go out now."""
        return time.monotonic() >= max(self._next, self.blocked_until)

    def delay(self) -> float:
        return max(0.0, max(self._next, self.blocked_until) - time.monotonic())

    async def wait(self) -> None:
        """Wait until this chat may send again (re-checked: a 429 may extend the block meanwhile)."""
        while (delay := self.delay()) > 0:  # noqa: ASYNC110 - a deadline that can move, not an event
            await anyio.sleep(delay)

    def sent(self) -> None:
        """Record an operation that reached Telegram."""
        self._next = time.monotonic() + self.interval

    def block(self, retry_after: float) -> None:
        """Telegram said 429 for this chat: nothing goes out before ``retry_after`` seconds."""
        self.blocked_until = max(self.blocked_until, time.monotonic() + retry_after)

    @property
    def blocked(self) -> bool:
        return time.monotonic() < self.blocked_until

    @property
    def idle_since(self) -> float:
        """Monotonic time since which this pacer constrains nothing (for pruning)."""
        return max(self._next, self.blocked_until)
