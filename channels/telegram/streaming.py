"""One reply in one chat: streamed as plain text by throttled edits, then delivered formatted.

While the model writes, :meth:`ReplyStream.push` records the text so far and a flusher sends it as
plain text: the first message after ``first_delay`` (a quick answer is then one single message), later
edits at most once per ``interval``, skipping unchanged text and skipping (not queueing) edits when the
chat is blocked by a 429 or the bot-wide budget is spent. :meth:`ReplyStream.finish` then delivers the
final text, split into parts whose visible text is at most 4096 UTF-16 units (what Telegram counts),
each formatted as Telegram HTML; it waits out any ``retry_after`` and retries network errors.

A final answer never vanishes silently: a part the Bot API refuses ("message is too long", entities it
cannot parse, any other 400) is retried split in halves, then as plain text, and a part refused every
way is replaced by a short notice in the chat. Each fallback is counted in
``hero_telegram_delivery_fallbacks_total``.
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

from agent.metrics import Counters
from channels.telegram.pacing import ChatPacer, GlobalLimiter
from channels.telegram.render import TELEGRAM_LIMIT, escape, split_markdown, split_text, to_html

log = structlog.get_logger("channels.telegram")

#: give up delivering one message after this long (Telegram is down, or the chat is gone)
DELIVERY_DEADLINE_S = 300.0
#: a part refused as too long is split in halves down to this visible length, then sent plain
MIN_PART_LIMIT = 512
DELIVERY_FALLBACKS = "hero_telegram_delivery_fallbacks_total"
DELIVERY_FALLBACKS_HELP = (
    "Final Telegram reply parts the Bot API refused, by the fallback taken: split (smaller parts), "
    "plain (without formatting), failed (a notice in the chat instead), undelivered (not even the notice)."
)


@dataclass
class _Sent:
    message_id: int
    text: str  # what we last sent (plain or HTML)
    html: bool


class DeliveryFailed(Exception):
    """A message could not be delivered (the chat is gone, or the deadline passed)."""


class _Refused(Exception):
    """Telegram answered 400 to one part (too long, entities it cannot parse, ...)."""

    def __init__(self, reason: str, *, too_long: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.too_long = too_long


@dataclass
class _Part:
    """One message of the final reply: Markdown to format (``html``) or plain text as it is."""

    source: str
    html: bool
    #: the visible length it was split for (UTF-16 units)
    limit: int = TELEGRAM_LIMIT
    #: the notice that replaces a part refused every way (if Telegram refuses it too, give up)
    notice: bool = False


def refused_notice(reason: str) -> str:
    """What the user sees instead of a part Telegram would not show, in any form."""
    reason = reason.removeprefix("Bad Request: ").strip()[:200] or "no reason given"
    return (
        f"⚠️ Telegram refused to show this part of my answer ({reason}). "
        "It is kept in the conversation history."
    )


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
        counters: Counters | None = None,
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
        self.counters = counters if counters is not None else Counters()
        self.counters.declare(DELIVERY_FALLBACKS, DELIVERY_FALLBACKS_HELP)

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
        """Deliver ``text`` formatted, as one message per part; waits out 429s and retries network
        errors. A part Telegram refuses is retried split smaller, then as plain text; a part refused
        every way is replaced by a short notice in the chat. Raises :class:`DeliveryFailed` when the chat
        is unreachable (blocked bot, deadline passed, or even the notice was refused)."""
        text = text if text.strip() else "(empty reply)"
        async with self._op_lock:
            parts = [_Part(p, html=True) for p in split_markdown(text)]
            i = 0
            while i < len(parts):
                try:
                    await self._deliver(i, parts[i])
                    i += 1
                except _Refused as refused:
                    parts[i : i + 1] = self._fallback(parts[i], refused)
            # parts the final text no longer has (it shrank): remove them
            for extra in reversed(self.sent[len(parts) :]):
                await self._deliver_delete(extra.message_id)
            del self.sent[len(parts) :]

    def _fallback(self, part: _Part, refused: _Refused) -> list[_Part]:
        """What to send instead of a refused part: the next step of split smaller -> plain -> notice."""
        log.info(
            "telegram.part_refused",
            chat_id=self.chat_id,
            html=part.html,
            limit=part.limit,
            too_long=refused.too_long,
            error=refused.reason,
        )
        if part.notice:
            raise DeliveryFailed(f"Telegram refused even the notice: {refused.reason}")
        smaller = part.limit // 2
        if refused.too_long and smaller >= MIN_PART_LIMIT:
            self._count("split")
            split = split_markdown if part.html else split_text
            return [_Part(p, html=part.html, limit=smaller) for p in split(part.source, smaller)]
        if part.html:
            self._count("plain")
            return [_Part(p, html=False) for p in split_text(part.source, TELEGRAM_LIMIT)]
        self._count("failed")
        log.warning("telegram.part_undeliverable", chat_id=self.chat_id, error=refused.reason)
        return [_Part(refused_notice(refused.reason), html=False, notice=True)]

    def _count(self, fallback: str) -> None:
        self.counters.inc(DELIVERY_FALLBACKS, fallback=fallback)

    async def _deliver(self, index: int, part: _Part) -> None:
        """Put ``part`` in message ``index`` (editing the streamed one, or sending a new one) until
        Telegram takes it: waits out 429s and retries network errors until the deadline. Raises
        :class:`_Refused` when Telegram answers 400 (other than "not modified")."""
        payload = to_html(part.source) if part.html else part.source
        if index < len(self.sent) and self._shows(self.sent[index], payload, part.html):
            return  # already shows exactly this
        delay = 0.5
        deadline = time.monotonic() + DELIVERY_DEADLINE_S
        replace: int | None = None  # the streamed message was deleted: send anew in its place
        while True:
            await self.pacer.wait()
            await self.limiter.acquire()
            try:
                if index < len(self.sent) and replace is None:
                    await self._edit(index, payload, part.html)
                else:
                    await self._send(payload, part.html, replace=replace)
                return
            except RetryAfter as exc:
                self._on_retry_after(exc)
            except BadRequest as exc:
                msg = str(exc).lower()
                if "not modified" in msg:
                    return
                if "message to edit not found" in msg and index < len(self.sent) and replace is None:
                    # the user deleted the streamed message: this part goes out as a new one
                    replace = index
                    continue
                raise _Refused(str(exc), too_long="too long" in msg or "too_long" in msg) from None
            except Forbidden as exc:
                raise DeliveryFailed(str(exc)) from None
            except (TimedOut, NetworkError) as exc:
                log.info("telegram.send_retry", chat_id=self.chat_id, error=type(exc).__name__)
                await anyio.sleep(delay)
                delay = min(delay * 2, 10.0)
            if time.monotonic() > deadline:
                raise DeliveryFailed("delivery deadline passed")

    @staticmethod
    def _shows(sent: _Sent, payload: str, as_html: bool) -> bool:
        if sent.html == as_html:
            return sent.text == payload
        # a streamed plain message already equals a formatted part without any markup
        return not sent.html and as_html and escape(sent.text) == payload

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
