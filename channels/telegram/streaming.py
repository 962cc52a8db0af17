"""One reply in one chat: streamed as plain text by throttled edits, then delivered formatted.

While the model writes, :meth:`ReplyStream.push` records the text so far and a flusher sends it as
plain text: the first message after ``first_delay`` (a quick answer is then one single message), later
edits at most once per ``interval``, skipping unchanged text and skipping (not queueing) edits when the
chat is blocked by a 429 or the bot-wide budget is spent. :meth:`ReplyStream.finish` then delivers the
final text, split into parts of at most 4096 characters, each formatted as Telegram HTML; it waits out
any ``retry_after`` and retries, so the final text always arrives (unless the turn's deadline passes).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import anyio
import structlog
from telegram import Bot, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut

from channels.telegram.pacing import ChatPacer, GlobalLimiter
from channels.telegram.render import escape, split_markdown, split_text, to_html

log = structlog.get_logger("channels.telegram")

#: give up delivering one message after this long (Telegram is down, or the chat is gone)
DELIVERY_DEADLINE_S = 300.0


@dataclass
class _Sent:
    message_id: int
    text: str  # what we last sent (plain or HTML)
    html: bool


class DeliveryFailed(Exception):
    """A message could not be delivered (the chat is gone, or the deadline passed)."""


class ReplyStream:
    """Sends and edits the messages of one reply; see the module docstring."""

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        pacer: ChatPacer,
        limiter: GlobalLimiter,
        *,
        interval: float,
        first_delay: float | None = None,
        reply_to: int | None = None,
    ) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.pacer = pacer
        self.limiter = limiter
        self.interval = interval
        self.first_delay = interval if first_delay is None else first_delay
        self.reply_to = reply_to
        self.sent: list[_Sent] = []
        self._text = ""
        self._changed = anyio.Event()
        self._started = time.monotonic()
        self._op_lock = anyio.Lock()
        self.rate_limited = 0

    # -- streaming -----------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The reply so far."""
        return self._text

    def push(self, text: str) -> None:
        """The reply so far (the whole text, not a delta)."""
        if text != self._text:
            self._text = text
            self._changed.set()

    async def run_flusher(self) -> None:
        """Send throttled plain-text updates until cancelled (by :meth:`finish`'s caller)."""
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            wait = max(self.pacer.delay(), self._started + self.first_delay - time.monotonic())
            if wait > 0:
                await anyio.sleep(wait)
            if not self.pacer.ready() or not self.limiter.try_acquire():
                # skipped, not queued: try again at the next change or tick
                self._changed.set()
                await anyio.sleep(min(self.interval, 0.25))
                continue
            # shielded: a send cut mid-request could leave a message we do not know about
            with anyio.CancelScope(shield=True):
                async with self._op_lock:
                    await self._flush_plain(self._text)

    async def _flush_plain(self, text: str) -> None:
        parts = split_text(text)
        for i, part in enumerate(parts):
            if i < len(self.sent) and self.sent[i].text == part:
                continue  # unchanged: Telegram would answer "message is not modified"
            if i < len(self.sent):
                ok = await self._try(partial(self._edit, i, part, False))
            else:
                ok = await self._try(partial(self._send, part, False))
            if not ok:
                return  # blocked or failed: the next tick retries from the current text
            if i < len(parts) - 1:
                return  # one operation per tick; earlier parts first

    async def _try(self, op: Callable[[], Awaitable[None]]) -> bool:
        """One best-effort streaming operation: a 429 blocks the chat and is not retried here."""
        try:
            await op()
        except RetryAfter as exc:
            self._on_retry_after(exc)
            return False
        except TelegramError as exc:  # cosmetic: the final delivery retries or reports it
            log.info("telegram.stream_edit_failed", chat_id=self.chat_id, error=type(exc).__name__)
            return False
        return True

    # -- final delivery ------------------------------------------------------------------------

    async def finish(self, text: str) -> None:
        """Deliver ``text`` formatted, as one message per part; waits out 429s. Raises
        :class:`DeliveryFailed` when the chat is unreachable."""
        text = text if text.strip() else "(empty reply)"
        async with self._op_lock:
            parts = split_markdown(text)
            for i, part in enumerate(parts):
                markup = to_html(part)
                if i < len(self.sent):
                    cur = self.sent[i]
                    if (cur.html and cur.text == markup) or (not cur.html and escape(cur.text) == markup):
                        continue  # already shows exactly this
                    await self._deliver(i, markup, part)
                else:
                    await self._deliver(None, markup, part)
            # parts the final text no longer has (it shrank): remove them
            for extra in reversed(self.sent[len(parts) :]):
                await self._deliver_delete(extra.message_id)
            del self.sent[len(parts) :]

    async def _deliver(self, index: int | None, markup: str, plain: str) -> None:
        """Edit part ``index`` (None: send a new message) until Telegram takes it: waits out 429s,
        retries network errors, and falls back to ``plain`` when the markup is refused."""
        as_html = True
        delay = 0.5
        deadline = time.monotonic() + DELIVERY_DEADLINE_S
        while True:
            await self.pacer.wait()
            await self.limiter.acquire()
            text = markup if as_html else plain
            try:
                if index is None:
                    await self._send(text, as_html)
                else:
                    await self._edit(index, text, as_html)
                return
            except RetryAfter as exc:
                self._on_retry_after(exc)
            except BadRequest as exc:
                msg = str(exc).lower()
                if "not modified" in msg:
                    return
                if as_html and ("parse entities" in msg or "can't parse" in msg or "unsupported" in msg):
                    log.info("telegram.html_rejected", chat_id=self.chat_id, error=str(exc))
                    as_html = False
                    continue
                if "message to edit not found" in msg and index is not None:
                    # the user deleted the streamed message: this part goes out as a new one
                    await self._send(text, as_html, replace=index)
                    return
                raise DeliveryFailed(str(exc)) from None
            except Forbidden as exc:
                raise DeliveryFailed(str(exc)) from None
            except (TimedOut, NetworkError) as exc:
                log.info("telegram.send_retry", chat_id=self.chat_id, error=type(exc).__name__)
                await anyio.sleep(delay)
                delay = min(delay * 2, 10.0)
            if time.monotonic() > deadline:
                raise DeliveryFailed("delivery deadline passed")

    async def _deliver_delete(self, message_id: int) -> None:
        try:
            await self.bot.delete_message(self.chat_id, message_id)
        except (BadRequest, NetworkError, Forbidden) as exc:
            log.info("telegram.delete_failed", chat_id=self.chat_id, error=type(exc).__name__)

    def _on_retry_after(self, exc: RetryAfter) -> None:
        # the public ``retry_after`` warns about its coming type change; the timedelta is stable
        seconds = exc._retry_after.total_seconds()
        self.pacer.block(float(seconds))
        self.rate_limited += 1
        log.info("telegram.rate_limited", chat_id=self.chat_id, retry_after=float(seconds))

    # -- the two operations --------------------------------------------------------------------

    async def _send(self, text: str, as_html: bool, *, replace: int | None = None) -> None:
        reply = None
        if self.reply_to is not None and not self.sent:
            reply = ReplyParameters(message_id=self.reply_to, allow_sending_without_reply=True)
        self.pacer.sent()
        msg = await self.bot.send_message(
            self.chat_id,
            text,
            parse_mode=ParseMode.HTML if as_html else None,
            reply_parameters=reply,
            disable_notification=False,
        )
        self.pacer.sent()  # again: space the next one from when Telegram saw this one
        if replace is None:
            self.sent.append(_Sent(msg.message_id, text, as_html))
        else:
            self.sent[replace] = _Sent(msg.message_id, text, as_html)

    async def _edit(self, index: int, text: str, as_html: bool) -> None:
        target = self.sent[index]
        self.pacer.sent()
        await self.bot.edit_message_text(
            text,
            chat_id=self.chat_id,
            message_id=target.message_id,
            parse_mode=ParseMode.HTML if as_html else None,
        )
        self.pacer.sent()
        self.sent[index] = _Sent(target.message_id, text, as_html)
