"""The Telegram channel: PTB's Application inside our own event loop (never ``run_polling``).

Flow of one update: PTB (long polling via :mod:`.polling`, or our :mod:`.webhook` route) puts it in
``app.update_queue``; the Application hands it to :meth:`TelegramChannel._on_update`, which classifies
it (:mod:`.identity`), checks who may talk (:mod:`.access`: strangers get a pairing code) and queues
it on its chat (:mod:`.chats`), so a chat's messages run in order while different chats run
concurrently. The job claims the update id in the store
(no double answer after a restart), runs the turn through :meth:`Agent.handle` and streams the reply
(:mod:`.streaming`). ``/stop`` skips the chat queue: it must reach the turn that is blocking that queue.

Per chat state kept by the channel: the chat's context (``/context NAME``), persisted in the store as
the state key ``telegram.context.<chat id>`` of the chat owner's scope in the default context, so it
survives restarts; the pacing of sends (in memory). A stranger's messages are answered with one
polite refusal carrying their Telegram id and a pairing code, a few times an hour at most; nothing but
the pending code is stored for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup
from telegram import BotCommand, Update
from telegram.error import InvalidToken, NetworkError, TelegramError, TimedOut
from telegram.ext import Application, ContextTypes, TypeHandler

from agent.core import Agent
from agent.slash_commands import HELP
from channels.base import Channel
from channels.errors import ChannelStartError
from channels.telegram.access import Gate
from channels.telegram.albums import Album, Albums
from channels.telegram.botapi import BotAPIAnswerError, BotAPIRequest
from channels.telegram.chats import ChatQueues
from channels.telegram.identity import Identity, Incoming, Kind, classify
from channels.telegram.leader import PollingLeader
from channels.telegram.polling import LivenessRequest, PollingWatchdog
from channels.telegram.responder import DUPLICATES, DUPLICATES_HELP, Responder
from channels.telegram.webhook import WebhookServer
from config import Settings
from store import StoreError

log = structlog.get_logger("channels.telegram")

UPDATER_STOP_DEADLINE_S = 5.0
_HELP_LINE = re.compile(r"^/(\w+)(?:[ \t]+[\[A-Z][\w\]]*)?[ \t]{2,}(.+)$")
#: loggers that may print request URLs, which contain the bot token
_URL_LOGGERS = (
    "httpx",
    "httpcore",
    "telegram.Bot",
    "telegram.ext.ExtBot",  # logs "Set Bot API URL: .../bot<TOKEN>" at debug level
    "telegram.ext.Updater",
    "telegram.request",
)


class _TokenFilter(logging.Filter):
    """Masks the bot token in library log records (httpx logs ``POST .../bot<TOKEN>/getUpdates``)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._token in message:
            record.msg, record.args = message.replace(self._token, "***"), None
        return True


def _wrong_shape(exc: BaseException | None) -> BotAPIAnswerError | None:
    """The shape error behind ``exc``: PTB re-raises it as other errors (a 404 as InvalidToken)."""
    for _ in range(10):
        if exc is None or isinstance(exc, BotAPIAnswerError):
            return exc
        exc = exc.__cause__
    return None


def bot_commands() -> list[BotCommand]:
    """The shared slash commands with their help lines, for ``setMyCommands``."""
    out = []
    for line in HELP.splitlines():
        m = _HELP_LINE.match(line.strip())
        if m:
            out.append(BotCommand(m.group(1), m.group(2).strip()[:256]))
    return out


class TelegramChannel(Channel):
    """The Telegram bot; see the module docstring and docs/telegram.md."""

    name = "telegram"

    def __init__(self, settings: Settings, agent: Agent) -> None:
        super().__init__(settings, agent)
        self._cfg = settings.telegram
        self._identity = Identity(settings)
        self._gate: Gate | None = None
        self._responder: Responder | None = None
        self._app: Application[Any, Any, Any, Any, Any, Any] | None = None
        self._poll_request: LivenessRequest | None = None
        self._send_request: BotAPIRequest | None = None
        self._watchdog: PollingWatchdog | None = None
        self._watch_scope: anyio.CancelScope | None = None
        self._leader: PollingLeader | None = None
        self._lead_scope: anyio.CancelScope | None = None
        self._webhook: WebhookServer | None = None
        self._queues: ChatQueues | None = None
        self._albums: Albums | None = None
        self._tg: TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._filter: _TokenFilter | None = None
        self._started = False
        self.bot_username = ""
        self.bot_id = 0
        #: counters for tests, benches and /metrics
        self.stats: dict[str, int] = {"answered": 0, "refused": 0, "duplicates": 0, "failed": 0}

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        return bool(settings.telegram.enabled)

    @property
    def webhook_port(self) -> int:
        """The bound port of the webhook listener (webhook mode)."""
        return self._webhook.port if self._webhook else 0

    @property
    def watchdog(self) -> PollingWatchdog | None:
        return self._watchdog

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if not self._cfg.token:
            raise ChannelStartError(
                "telegram: no bot token configured (set [telegram] token or TELEGRAM_BOT_TOKEN)"
            )
        self._filter = _TokenFilter(self._cfg.token)
        for name in _URL_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        try:
            await self._start()
        except ChannelStartError:
            await self.stop()
            raise
        except Exception as exc:
            problem = self._start_problem(exc)
            await self.stop()
            if problem is None:
                raise
            raise ChannelStartError(f"telegram: {problem}") from None

    def _start_problem(self, exc: Exception) -> str | None:
        """One secret-free line for a start failure (None: a bug, let it surface)."""
        base = self._cfg.api_base_url.replace(self._cfg.token, "***").replace("{token}", "")
        wrong_shape = _wrong_shape(exc)
        if wrong_shape is not None:  # also an HTML 404 page, which PTB reports as InvalidToken
            return f"telegram.api_base_url ({base}) does not answer like the Bot API: {wrong_shape}"
        if isinstance(exc, InvalidToken):
            return "the Bot API rejected the bot token"
        if isinstance(exc, TimedOut | NetworkError):
            return f"cannot reach the Bot API at {base}"
        if isinstance(exc, TelegramError):  # e.g. setWebhook refused: "bad webhook: ..."
            return f"the Bot API refused: {str(exc).replace(self._cfg.token, '***')}"
        if isinstance(exc, OSError):
            return (
                f"cannot listen for the webhook on {self._cfg.webhook_host}:{self._cfg.webhook_port}"
                f" ({exc.strerror or exc})"
            )
        return None

    async def _start(self) -> None:
        cfg = self._cfg
        polling = cfg.mode != "webhook"
        if not polling and not (cfg.webhook_url and cfg.webhook_secret):
            raise ChannelStartError(
                "telegram: webhook mode needs telegram.webhook_url and telegram.webhook_secret"
            )
        base = cfg.api_base_url
        derived = base[: -len("/bot")] + "/file/bot" if base.endswith("/bot") else base
        file_base = cfg.file_base_url or derived
        sends = BotAPIRequest(
            connection_pool_size=max(16, cfg.max_concurrent_turns * 2),
            read_timeout=20.0,
            write_timeout=20.0,
            connect_timeout=10.0,
            pool_timeout=10.0,
        )
        self._send_request = sends
        builder = (
            Application.builder()
            .token(cfg.token)
            .base_url(base)
            .base_file_url(file_base)
            .request(sends)
            .concurrent_updates(False)
        )
        if polling:
            self._poll_request = LivenessRequest(
                connection_pool_size=2, read_timeout=10.0, connect_timeout=10.0, pool_timeout=10.0
            )
            builder = builder.get_updates_request(self._poll_request)
        else:
            builder = builder.updater(None)
        app = builder.build()
        app.add_handler(TypeHandler(Update, self._on_update))
        self._app = app
        try:
            await app.initialize()  # getMe: validates the token and the base URL
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            # a well-formed answer whose result is not a bot user: PTB fails reading it
            raise BotAPIAnswerError(f"getMe answered no bot user ({type(exc).__name__})") from None
        self.bot_username, self.bot_id = app.bot.username, app.bot.id
        self._responder = Responder(self.settings, self.agent, self._identity, app.bot, self.stats)
        self._runner = asyncio.create_task(self._run(), name="telegram-channel")
        await self._ready.wait()
        await self._register_commands()
        await app.start()
        if polling:
            assert app.updater is not None and self._poll_request is not None and self._tg is not None
            self._watchdog = PollingWatchdog(app.updater, self._poll_request, cfg)
            self._leader = PollingLeader(
                self.agent.store,
                self.bot_id,
                self.agent.metrics,
                start_polling=self._start_polling,
                stop_polling=self._stop_polling,
            )
            await self._leader.step()  # polls at once unless another daemon on the store does
            self._lead_scope = anyio.CancelScope()
            self._tg.start_soon(self._lead, self._lead_scope)
        else:
            self._webhook = WebhookServer(
                app.bot,
                app.update_queue,
                host=cfg.webhook_host,
                port=cfg.webhook_port,
                path=cfg.webhook_path,
                secret=cfg.webhook_secret,
            )
            await self._webhook.start()
            await app.bot.set_webhook(
                cfg.webhook_url, secret_token=cfg.webhook_secret, allowed_updates=["message"]
            )
        self.agent.metrics.counters.declare(DUPLICATES, DUPLICATES_HELP)
        if not polling:  # every replica serves the webhook (the store de-duplicates updates)
            self.agent.metrics.channel_states["telegram"] = "webhook"
        if not cfg.allowed_users and not any(u.telegram_ids for u in self.settings.users):
            log.warning(
                "telegram.nobody_allowed",
                hint="write to the bot for a pairing code, then: hero-agent pair approve CODE"
                if cfg.pairing
                else "set telegram.allowed_users or [users.<name>] telegram_ids",
            )
        log.info("telegram.started", bot=self.bot_username, mode=cfg.mode)

    async def _run(self) -> None:
        """Owns the task group of chat workers and the watchdog until :meth:`stop`."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._queues = ChatQueues(tg, self._cfg.max_concurrent_turns)
            self._albums = Albums(tg, self._cfg.media_group_wait_s)
            self._ready.set()
            await self._closing.wait()
            tg.cancel_scope.cancel()

    async def _start_polling(self) -> None:
        """This daemon became the poller (see :mod:`.leader`): poll, under the watchdog."""
        assert self._watchdog is not None and self._tg is not None
        await self._watchdog.start_polling()
        # the scope exists before the task runs: a stop right after this start cancels it for sure
        self._watch_scope = anyio.CancelScope()
        self._tg.start_soon(self._watch, self._watch_scope)

    async def _stop_polling(self) -> None:
        """Stop polling (leadership lost, or the channel stops); idempotent."""
        if self._watch_scope is not None:
            self._watch_scope.cancel()
        app = self._app
        if app is not None and app.updater is not None and app.updater.running:
            # PTB's stop waits out its own retry sleep (up to 30 s after repeated errors): bound it
            with anyio.move_on_after(UPDATER_STOP_DEADLINE_S) as waited:
                await app.updater.stop()
            if waited.cancelled_caught:
                log.warning("telegram.updater_stop_timeout")

    async def _lead(self, scope: anyio.CancelScope) -> None:
        assert self._leader is not None
        with scope:
            await self._leader.run()

    async def _watch(self, scope: anyio.CancelScope) -> None:
        assert self._watchdog is not None
        with scope:
            try:
                await self._watchdog.run()
            except InvalidToken:
                log.error("telegram.polling_stopped", reason="token rejected")
            except Exception:
                # never take the chat workers down with it; polling itself goes on without a watchdog
                log.exception("telegram.watchdog_failed")

    async def _register_commands(self) -> None:
        assert self._app is not None
        try:
            await self._app.bot.set_my_commands(bot_commands())
        except TelegramError as exc:  # cosmetic: the bot works without the menu
            log.warning("telegram.set_commands_failed", error=type(exc).__name__)

    async def stop(self) -> None:
        """Stop fetching, let queued turns finish (up to ``shutdown_deadline_s``), then cancel the rest
        and release everything. Safe after a partial start; idempotent."""
        app = self._app
        if self._lead_scope is not None:
            self._lead_scope.cancel()
        await self._stop_polling()
        if self._leader is not None:  # polling has stopped: the next daemon may poll at once
            await self._leader.release()
        if self._webhook is not None:
            await self._webhook.stop()
            self._webhook = None
        if app is not None and app.running:
            await app.stop()
        if self._queues is not None:
            finished = await self._queues.drain(self._cfg.shutdown_deadline_s)
            if not finished:
                log.warning("telegram.stop_cancelled_turns", chats=self._queues.busy_chats)
        self._closing.set()
        if self._runner is not None:
            try:
                await self._runner
            except Exception:
                log.exception("telegram.workers_failed")
            self._runner = None
        self._app = None
        if app is not None:
            with contextlib.suppress(RuntimeError):
                await app.shutdown()
        # PTB skips its shutdown when initialize() failed half way (getMe refused), leaving the
        # request objects' connection pools open: close them ourselves (idempotent)
        for request in (self._send_request, self._poll_request):
            if request is not None:
                await request.shutdown()
        if self._filter is not None:
            for name in _URL_LOGGERS:
                logging.getLogger(name).removeFilter(self._filter)
            self._filter = None
        log.info("telegram.stopped")

    async def serving(self) -> None:
        """In webhook mode, the webhook server's death is a crash. Polling has no server of its own:
        Bot API and network outages are retried by PTB and :mod:`.polling`'s watchdog, not crashes."""
        if self._webhook is not None:
            await self._webhook.serving()
        await anyio.sleep_forever()

    async def send_typing(self, target: str) -> None:
        if self._app is not None:
            await self._app.bot.send_chat_action(int(target), "typing")

    # -- updates -------------------------------------------------------------------------------

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Called by PTB for every update, one at a time and in order: classify and queue, fast."""
        cap = self.settings.agent.max_attachment_bytes
        incoming = classify(update, self.bot_username, self.bot_id, cap)
        if incoming is None or self._queues is None or self._tg is None or self._albums is None:
            return
        assert self._responder is not None
        configured = self._identity.configured(incoming.sender_id)
        stop = incoming.kind is Kind.COMMAND and incoming.command == "stop"
        if stop and (configured or self._identity.linked(incoming.sender_id)):
            self._tg.start_soon(self._responder.stop_turn, incoming)
            return
        handle = self._responder.process if configured else self._gated
        job = partial(handle, incoming)
        if incoming.media_group_id:
            album = self._albums.add(incoming)
            if album is None:
                return  # joined an open album: its job, already queued, answers it
            job = partial(self._album_job, album, handle)
        if not self._queues.submit(incoming.chat_id, job):
            # stopping: unclaimed, so a redelivery after the restart is answered
            log.info("telegram.update_not_taken", update_id=incoming.update_id, reason="stopping")

    async def _album_job(self, album: Album, handle: Callable[[Incoming], Awaitable[None]]) -> None:
        """Waits (in the chat's queue) for the album to close, then answers it as one message."""
        await album.closed.wait()
        merged = album.merged()
        if merged.addressed:
            await handle(merged)

    async def _gated(self, incoming: Incoming) -> None:
        """A sender the config does not know: answered when a pairing linked them, else refused."""
        assert self._responder is not None
        if self._gate is None:
            self._gate = Gate(self._cfg, self._identity, self.agent.pairing)
        try:
            admitted = await self._gate.admit(incoming)
            refusal = None if admitted else await self._gate.refusal(incoming)
        except StoreError as exc:
            log.warning("telegram.gate_store_error", error=type(exc).__name__, chat_id=incoming.chat_id)
            return
        if admitted:
            if incoming.kind is Kind.COMMAND and incoming.command == "stop":
                await self._responder.stop_turn(incoming)
            else:
                await self._responder.process(incoming)
            return
        log.warning(
            "telegram.refused",
            telegram_id=incoming.sender_id,
            chat_id=incoming.chat_id,
            is_group=incoming.is_group,
            answered=refusal is not None,
        )
        if refusal is not None:
            self.stats["refused"] += 1
            await self._responder.reply(incoming, refusal)
