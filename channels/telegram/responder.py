"""Answers one chat's updates: dedupe, the chat's context, the turn, and the streamed reply.

Every update is de-duplicated through the store, in the chat owner's scope of the default context:
while it is handled, a lease ``tg-update:<id>`` (short, renewed while the update is handled, for at
most ``agent.turn_lock_ttl_s``, like a turn lock) keeps any other process (or a webhook retry) from
handling it at the same time; once it is answered, the state key ``telegram.done.<id>`` marks it
for good. An update delivered twice -- after a restart before Telegram got our offset, or a webhook
retry -- is therefore answered once; and one whose handler died before answering (kill -9) is
answered when Telegram delivers it again, instead of being lost. Its user message is stored with the
request key ``tg-update:<id>``, so a redelivery never stores it twice.

A chat's context (``/context NAME``) is kept as the state key ``telegram.context.<chat id>`` of the
owner's scope in the default context, so it survives restarts.

Voice notes and images (:mod:`.media`) are fetched and checked before the turn starts: a voice note
too large or too long, a corrupt image, Telegram's file server or the transcription service down --
each answers one clear message in the chat and nothing is stored. A voice note's transcript is the
user message (stored as spoken, with its duration); the reply is text, and also a voice note
(``sendVoice``, Ogg/Opus from ``/v1/audio/speech``) when ``[llm] speech_model`` is set and
``[telegram] voice_replies`` is on.
"""

from __future__ import annotations

import time

import anyio
import structlog
from telegram import Bot, ReplyParameters
from telegram.error import RetryAfter, TelegramError

from agent.core import Agent, TurnRequest
from agent.events import CommandOutput, Done, TextDelta, ToolStarted, TurnFailed
from agent.media import MediaError
from channels.telegram.identity import Identity, Incoming, Kind
from channels.telegram.media import MediaFetcher
from channels.telegram.pacing import ChatPacer, GlobalLimiter
from channels.telegram.render import to_html, visible
from channels.telegram.streaming import DELIVERY_FALLBACKS, DeliveryFailed, ReplyStream
from config import Settings
from store import LEASE_S, NewAttachment, Scope, StoreError, validate_context

log = structlog.get_logger("channels.telegram")

UNSUPPORTED_TEXT = (
    "Sorry, I can read text, voice notes and photos (also images sent as files), but not this kind "
    "of message (audio files, other documents, stickers, videos, locations ...). Please type it."
)
MEDIA_TOTAL = "hero_telegram_media_total"
MEDIA_HELP = (
    "Telegram voice notes, photos (and image documents) and albums received, by kind (voice, photo, "
    "media_group) and outcome: accepted (went to the model), refused (a clear message in the chat)."
)
VOICE_REPLIES = "hero_telegram_voice_replies_total"
DUPLICATES = "hero_telegram_duplicate_updates_total"
DUPLICATES_HELP = (
    "Updates dropped as already answered or being answered (by this or another daemon on the store), "
    "by mode: a webhook retry, the same update posted to two replicas, a redelivery after a restart."
)
VOICE_REPLIES_HELP = (
    "Spoken replies to voice notes sent with sendVoice, by outcome: sent, failed (the speech service or "
    "the Bot API failed; the text reply went out anyway)."
)
VOICE_DEADLINE_S = 60.0
TYPING_EVERY_S = 4.0
INTERRUPTED = "⏹ Interrupted: the bot is restarting. Send your message again if needed."
INTERRUPTED_NOTE_DEADLINE_S = 3.0
SETTLE_DEADLINE_S = 5.0


class Responder:
    """Runs the jobs the channel queues per chat; see the module docstring."""

    def __init__(
        self, settings: Settings, agent: Agent, identity: Identity, bot: Bot, stats: dict[str, int]
    ) -> None:
        self._settings = settings
        self._agent = agent
        self._identity = identity
        self._bot = bot
        self.stats = stats
        self._limiter = GlobalLimiter(settings.telegram.global_rate_per_s)
        self._pacers: dict[int, ChatPacer] = {}
        self._contexts: dict[int, str] = {}
        self._fetcher: MediaFetcher | None = None

    def _home(self, incoming: Incoming) -> Scope:
        """Where the chat's de-duplication marks and context live."""
        return Scope(self._settings.agent.default_context, self._identity.owner(incoming))

    async def _claim(self, incoming: Incoming) -> Scope | None:
        """The chat's scope if this update is neither answered nor being handled elsewhere, else None.

        On success the update's lease is held: :meth:`_settle` releases it (and marks it answered)."""
        home = self._home(incoming)
        store = self._agent.store
        key = f"tg-update:{incoming.update_id}"
        # the lease first, then the "answered" mark: the holder that answers marks it BEFORE it
        # releases the lease, so once the lease is ours a mark set by the other holder is visible.
        # (Looking at the mark first let a second delivery look, find none, and take the lease the
        # first holder had just marked and released: the update was answered twice.)
        claimed = await store.leases.try_claim(home, key, ttl_s=min(LEASE_S, self._lease_ttl_s))
        answered = claimed and await store.state.get(home, f"telegram.done.{incoming.update_id}") is not None
        if answered:
            await store.leases.release(home, key)
        if not claimed or answered:
            self.stats["duplicates"] += 1
            counters = self._agent.metrics.counters
            counters.declare(DUPLICATES, DUPLICATES_HELP)
            counters.inc(DUPLICATES, mode=self._settings.telegram.mode)
            log.info("telegram.duplicate_update", update_id=incoming.update_id, chat_id=incoming.chat_id)
            return None
        return Scope(await self._context_for(incoming.chat_id, home), home.user_id)

    async def _settle(self, incoming: Incoming, *, answered: bool) -> None:
        """Mark the update answered (when it was) and release its lease; shielded, bounded."""
        home = self._home(incoming)
        with anyio.CancelScope(shield=True), anyio.move_on_after(SETTLE_DEADLINE_S):
            try:
                if answered:
                    for update_id in (incoming.update_id, *incoming.also):
                        await self._agent.store.state.set(home, f"telegram.done.{update_id}", "1")
                await self._agent.store.leases.release(home, f"tg-update:{incoming.update_id}")
            except StoreError as exc:  # the lease expires by itself; a redelivery may answer again
                log.warning("telegram.settle_failed", error=type(exc).__name__, update_id=incoming.update_id)

    @property
    def _lease_ttl_s(self) -> float:
        return self._settings.agent.turn_lock_ttl_s

    async def process(self, incoming: Incoming) -> None:
        try:
            scope = await self._claim(incoming)
        except StoreError as exc:
            log.warning("telegram.store_error", error=type(exc).__name__, chat_id=incoming.chat_id)
            await self.reply(incoming, f"⚠️ {exc.user_message}")
            return
        if scope is None:
            return
        answered = False
        key, home = f"tg-update:{incoming.update_id}", self._home(incoming)
        try:
            async with self._agent.store.leases.keep(home, key, max_hold_s=self._lease_ttl_s):
                if incoming.kind is Kind.UNSUPPORTED:
                    await self.reply(incoming, UNSUPPORTED_TEXT)
                else:
                    with structlog.contextvars.bound_contextvars(
                        chat_id=incoming.chat_id, update_id=incoming.update_id
                    ):
                        await self._run_turn(incoming, scope)
            answered = True
        finally:
            await self._settle(incoming, answered=answered)

    async def _run_turn(self, incoming: Incoming, scope: Scope) -> None:
        stream = self._stream(incoming)
        final, spoken = "", False
        try:
            async with anyio.create_task_group() as tg:
                if incoming.kind is not Kind.COMMAND:
                    tg.start_soon(self._typing, incoming.chat_id, stream.pacer)
                req = await self._request(incoming, scope)
                if isinstance(req, TurnRequest):
                    if incoming.kind is not Kind.COMMAND:
                        tg.start_soon(stream.run_flusher)
                    final, spoken = await self._consume(req, stream, incoming)
                else:
                    final = req
                tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            # shutting down mid-reply: say so in the message the user already sees, briefly
            if stream.sent:
                with anyio.CancelScope(shield=True), anyio.move_on_after(INTERRUPTED_NOTE_DEADLINE_S):
                    await stream.finish(f"{stream.text}\n\n{INTERRUPTED}")
            raise
        await self._deliver(stream, final)
        if spoken and incoming.kind is Kind.VOICE:
            await self._voice_reply(incoming, stream, final)

    async def _request(self, incoming: Incoming, scope: Scope) -> TurnRequest | str:
        """The turn's request, its media fetched and checked; a refusal's message instead."""
        text, voice = incoming.text, None
        images: tuple[NewAttachment, ...] = ()
        att, kind = incoming.attached, _media_kind(incoming)
        if att is not None:
            if self._fetcher is None:
                self._fetcher = MediaFetcher(self._bot, self._agent.media)
            try:
                if att.voice is not None:
                    heard = await self._fetcher.transcript(att.voice, att.duration_s)
                    text, voice = heard.text, heard.voice
                else:
                    images = await self._fetcher.images(att.images)
            except MediaError as exc:
                self._agent.metrics.counters.inc(MEDIA_TOTAL, kind=kind, outcome="refused")
                log.info("telegram.media_refused", kind=kind, code=exc.code)
                return f"⚠️ {exc.user_message}"
            self._agent.metrics.counters.inc(MEDIA_TOTAL, kind=kind, outcome="accepted")
        return TurnRequest(
            scope,
            "telegram",
            text,
            sender=self._identity.sender(incoming),
            is_group=incoming.is_group,
            request_key=f"tg-update:{incoming.update_id}",
            images=images,
            voice=voice,
        )

    async def _voice_reply(self, incoming: Incoming, stream: ReplyStream, text: str) -> None:
        """The reply spoken, as a voice note after the text (when spoken replies are on)."""
        media = self._agent.media
        if not self._settings.telegram.voice_replies or not media.audio.can_speak:
            return
        audio = await media.speak(visible(to_html(text)), "telegram")
        outcome = "failed"
        if audio is not None:
            reply = None
            if incoming.is_group:
                reply = ReplyParameters(message_id=incoming.message_id, allow_sending_without_reply=True)
            with anyio.move_on_after(VOICE_DEADLINE_S):
                outcome = await self._send_voice(stream, audio, reply)
        self._agent.metrics.counters.inc(VOICE_REPLIES, outcome=outcome)

    async def _send_voice(self, stream: ReplyStream, audio: bytes, reply: ReplyParameters | None) -> str:
        for _ in range(3):
            await stream.pacer.wait()
            await self._limiter.acquire()
            stream.pacer.sent()
            try:
                await self._bot.send_voice(
                    stream.chat_id, audio, filename="reply.ogg", reply_parameters=reply
                )
                return "sent"
            except RetryAfter as exc:
                # the public ``retry_after`` warns about its coming type change; the timedelta is stable
                stream.pacer.block(exc._retry_after.total_seconds())
            except TelegramError as exc:
                log.warning("telegram.voice_reply_failed", chat_id=stream.chat_id, error=type(exc).__name__)
                return "failed"
        return "failed"

    async def _consume(self, req: TurnRequest, stream: ReplyStream, incoming: Incoming) -> tuple[str, bool]:
        """The final text, and whether it is the model's answer (not an error or a command's output)."""
        text = ""
        async for event in self._agent.handle(req):
            if isinstance(event, TextDelta):
                text += event.text
                stream.push(text)
            elif isinstance(event, ToolStarted):
                # a compact hint while a tool runs and the model reads its result; the next text
                # (or the final reply) replaces it
                stream.push(f"{text}\n\n🔧 {event.name}…".strip())
            elif isinstance(event, Done):
                return event.text or text, True
            elif isinstance(event, TurnFailed):
                note = "⏹ Stopped." if event.code == "cancelled" else f"⚠️ {event.message}"
                return (f"{text}\n\n{note}" if text.strip() else note), False
            elif isinstance(event, CommandOutput):
                context = event.data.get("context")
                if event.ok and isinstance(context, str):
                    await self._switch_context(incoming, context)
                return event.text, False
        return text, False

    async def stop_turn(self, incoming: Incoming) -> None:
        """``/stop``: cancel the chat's running turn now (its queue is blocked by that very turn)."""
        try:
            scope = await self._claim(incoming)
            if scope is None:
                return
            try:
                stopped = await self._agent.stop_turn(scope)
            finally:
                await self._settle(incoming, answered=True)
        except (StoreError, TimeoutError) as exc:
            log.warning("telegram.stop_failed", error=type(exc).__name__)
            stopped = False
        if not stopped:
            await self.reply(incoming, "Nothing is running.")

    # -- chat state and sending ----------------------------------------------------------------

    async def _context_for(self, chat_id: int, home: Scope) -> str:
        cached = self._contexts.get(chat_id)
        if cached is not None:
            return cached
        stored = await self._agent.store.state.get(home, f"telegram.context.{chat_id}")
        try:
            context = validate_context(stored) if stored else home.context
        except StoreError:
            context = home.context
        self._contexts[chat_id] = context
        return context

    async def _switch_context(self, incoming: Incoming, context: str) -> None:
        home = Scope(self._settings.agent.default_context, self._identity.owner(incoming))
        await self._agent.store.state.set(home, f"telegram.context.{incoming.chat_id}", context)
        self._contexts[incoming.chat_id] = context
        log.info("telegram.context_switched", chat_id=incoming.chat_id, context=context)

    def _pacer(self, chat_id: int) -> ChatPacer:
        pacer = self._pacers.get(chat_id)
        if pacer is None:
            if len(self._pacers) > 10_000:  # forget chats that constrain nothing any more
                now = time.monotonic()
                self._pacers = {k: p for k, p in self._pacers.items() if p.idle_since > now}
            pacer = self._pacers[chat_id] = ChatPacer(self._settings.telegram.edit_interval_s)
        return pacer

    def _stream(self, incoming: Incoming) -> ReplyStream:
        counters = self._agent.metrics.counters
        counters.declare(MEDIA_TOTAL, MEDIA_HELP)  # idempotent: shown from the first reply on
        counters.declare(VOICE_REPLIES, VOICE_REPLIES_HELP)
        return ReplyStream(
            self._bot,
            incoming.chat_id,
            self._pacer(incoming.chat_id),
            self._limiter,
            interval=self._settings.telegram.edit_interval_s,
            reply_to=incoming.message_id if incoming.is_group else None,
            counters=self._agent.metrics.counters,
        )

    async def reply(self, incoming: Incoming, text: str) -> None:
        await self._deliver(self._stream(incoming), text)

    async def _deliver(self, stream: ReplyStream, text: str) -> None:
        try:
            await stream.finish(text)
            self.stats["answered"] += 1
        except DeliveryFailed as exc:
            self.stats["failed"] += 1
            self._agent.metrics.counters.inc(DELIVERY_FALLBACKS, fallback="undelivered")
            log.warning("telegram.delivery_failed", chat_id=stream.chat_id, error=str(exc)[:200])

    async def _typing(self, chat_id: int, pacer: ChatPacer) -> None:
        """``typing`` every few seconds while the model works (Telegram shows it for about 5 s)."""
        while True:
            if not pacer.blocked:
                try:
                    await self._bot.send_chat_action(chat_id, "typing")
                except TelegramError as exc:
                    log.debug("telegram.typing_failed", error=type(exc).__name__)
            await anyio.sleep(TYPING_EVERY_S)


def _media_kind(incoming: Incoming) -> str:
    """The counters' ``kind`` of a message's media ("" for none)."""
    if incoming.attached is None:
        return ""
    if incoming.attached.voice is not None:
        return "voice"
    return "media_group" if incoming.media_group_id else "photo"
