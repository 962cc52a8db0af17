"""A fake Telegram Bot API: a real HTTP server on 127.0.0.1 speaking the Bot API wire format.

PTB is pointed at it with ``base_url=fake.base_url`` so the real PTB HTTP path runs. Requests arrive at
``/bot<token>/<method>`` form-encoded (nested objects as JSON strings) or as JSON; answers are
``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": ..., "description": ...}``.

Scripting::

    async with FakeBotAPI() as fake:
        fake.push_update(fake.text_update(chat_id=5, user_id=5, text="hi"))
        fake.inject_error("editMessageText", error_code=429, retry_after=1, times=3)
        fake.inject_conflict(times=2)                # 409 on the next getUpdates
        await fake.wait_for(lambda: fake.messages_in(5), timeout=5)

Texts are checked as the Bot API checks them: HTML is parsed strictly (``telegram_html``; an error
answers 400 "can't parse entities"), and a text whose visible part is longer than 4096 UTF-16 code
units answers 400 "message is too long".

Files: ``voice_update``/``photo_update``/``document_update`` store the media as files the bot fetches
the real way, ``getFile`` then ``GET /file/bot<token>/<file_path>`` (``base_file_url``; also served
under ``/cdn/file/bot...`` for a configured file base URL); every download is recorded in
``downloads``; ``fail_downloads`` answers them 502. ``sendVoice`` (multipart, like Telegram's) is
recorded in ``voices`` with the uploaded bytes.

Optional Telegram-like limits (``FakeBotAPI(limits=Limits())``) answer 429 when a chat gets messages or
edits faster than ``per_chat_interval_s`` or all chats together more than ``global_per_s`` in one second,
and count them in ``rate_limited``. Unknown methods answer 400, not 404 (PTB maps 401/404 to
``InvalidToken``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.served import ServedApp
from tests.fakes.telegram_html import HTMLError, visible_text
from tests.fakes.telegram_updates import UpdateBuilder
from tests.waiting import until

TOKEN = "123456:TEST-token-abcdefghijklmnopqrstuvwxyz"
BOT_ID = 123456
BOT_USERNAME = "hero_test_bot"
MAX_TEXT = 4096
#: form fields PTB sends as JSON strings
_JSON_FIELDS = {
    "reply_markup",
    "entities",
    "allowed_updates",
    "commands",
    "reply_parameters",
    "link_preview_options",
    "scope",
}
#: methods that count against the send limits
_LIMITED = {"sendMessage", "editMessageText"}


@dataclass
class Limits:
    """Telegram-like flood limits the fake enforces (off unless passed to the constructor)."""

    per_chat_interval_s: float = 0.9
    global_per_s: int = 30


@dataclass
class _Injected:
    error_code: int
    description: str
    retry_after: int | None
    times: int
    chat_id: int | None = None


@dataclass
class BotMessage:
    """One message the bot sent, as it stands now (after edits)."""

    chat_id: int
    message_id: int
    text: str  # what the user sees (HTML tags removed, entities decoded)
    raw: str  # the last text sent, markup included
    parse_mode: str | None
    edits: int = 0
    deleted: bool = False
    history: list[str] = field(default_factory=list)
    #: monotonic time of each entry of ``history``
    times: list[float] = field(default_factory=list)


class FakeBotAPI(UpdateBuilder, ServedApp):
    """The fake server; see the module docstring. Thread-safe scripting (one lock around the state)."""

    def __init__(self, token: str = TOKEN, *, limits: Limits | None = None) -> None:
        self.token = token
        self.limits = limits
        self.base_url = ""
        self.base_file_url = ""
        self.port = 0
        self.bot_user = {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Hero",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        #: every call: (method, params, monotonic time)
        self.calls: list[tuple[str, dict[str, Any], float]] = []
        self.counts: dict[str, int] = defaultdict(int)
        self.rate_limited = 0
        #: flood-limit 429s by cause: "chat" or "global"
        self.rate_limited_by: dict[str, int] = defaultdict(int)
        #: injected errors answered, per method
        self.errors_sent: dict[str, int] = defaultdict(int)
        self.conflicts_sent = 0
        self.webhook: dict[str, Any] = {}
        self.commands: list[dict[str, Any]] = []
        self.confirm_offsets = True  # False simulates a crash before the offset reached Telegram
        #: long polls (timeout > 0) hang without an answer while this is set (a stalled connection)
        self.stall_polls = False
        self._lock = threading.RLock()
        self._pending: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1000)
        self._msg_ids: dict[int, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
        self._bot_msgs: dict[tuple[int, int], BotMessage] = {}
        self._order: list[BotMessage] = []
        self._chats: dict[int, dict[str, Any]] = {}
        self._errors: dict[str, deque[_Injected]] = defaultdict(deque)
        self._poll_generation = 0
        self._chat_last_send: dict[int, float] = {}
        self._global_window: deque[float] = deque()
        self._closing = False
        self.files: dict[str, tuple[str, bytes]] = {}
        self._file_ids = itertools.count(1)
        #: URL paths of the bot's file downloads, in order
        self.downloads: list[str] = []
        #: downloads answer 502 while this is set (a Telegram file server outage)
        self.fail_downloads = False
        #: every sendVoice: chat_id, the uploaded bytes, file name, content type, other params
        self.voices: list[dict[str, Any]] = []

    # -- scripting: updates --------------------------------------------------------------------

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue an update for getUpdates; assigns ``update_id`` when missing. Returns it."""
        with self._lock:
            update.setdefault("update_id", next(self._update_ids))
            self._pending.append(update)
            self._pending.sort(key=lambda u: u["update_id"])
            return int(update["update_id"])

    # -- scripting: failures -------------------------------------------------------------------

    def inject_error(
        self,
        method: str,
        *,
        error_code: int = 429,
        retry_after: int | None = None,
        description: str = "",
        times: int = 1,
        chat_id: int | None = None,
    ) -> None:
        """The next ``times`` calls of ``method`` (in ``chat_id`` only, when given) fail with this
        error (429 gets ``retry_after`` 1 unless told)."""
        if error_code == 429 and retry_after is None:
            retry_after = 1
        desc = description or {
            429: f"Too Many Requests: retry after {retry_after}",
            409: "Conflict: terminated by other getUpdates request",
            502: "Bad Gateway",
        }.get(error_code, "Bad Request: injected")
        with self._lock:
            self._errors[method].append(_Injected(error_code, desc, retry_after, times, chat_id))

    def inject_conflict(self, times: int = 1) -> None:
        self.inject_error("getUpdates", error_code=409, times=times)

    # -- inspection ----------------------------------------------------------------------------

    def messages_in(self, chat_id: int) -> list[str]:
        """What the chat shows now: the bot's messages (final texts after edits), oldest first."""
        with self._lock:
            return [m.text for m in self._order if m.chat_id == chat_id and not m.deleted]

    def bot_messages(self, chat_id: int | None = None) -> list[BotMessage]:
        with self._lock:
            return [m for m in self._order if chat_id is None or m.chat_id == chat_id]

    def delete_bot_message(self, chat_id: int, message_id: int) -> None:
        """What a user deleting one of the bot's messages looks like to the bot: edits of it fail."""
        with self._lock:
            self._bot_msgs[(chat_id, message_id)].deleted = True

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [p for m, p, _ in self.calls if m == method]

    @property
    def pending_updates(self) -> int:
        with self._lock:
            return len(self._pending)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll ``predicate`` until it is truthy (returns its value); AssertionError after ``timeout``,
        naming the bot's last calls other than ``getUpdates`` (what the code under test did say)."""
        return await until(predicate, timeout=timeout, what=self._recent_calls)

    def _recent_calls(self) -> str:
        with self._lock:
            said = [(m, p) for m, p, _ in self.calls if m != "getUpdates"]
        return f"the fake Bot API's calls to come; its last calls: {said[-10:]!r}"

    # -- the API -------------------------------------------------------------------------------

    async def _handle(self, request: Request) -> JSONResponse:
        path = request.url.path
        if not path.startswith("/bot") or path.count("/") != 2:
            return _error(404, "Not Found")
        token, method = path[len("/bot") :].split("/", 1)
        if token != self.token:
            return _error(401, "Unauthorized")
        params = await _params(request)
        with self._lock:
            self.calls.append((method, params, time.monotonic()))
            self.counts[method] += 1
            injected = self._take_error(method, params)
        if injected is not None:
            self.errors_sent[method] += 1
            if injected.error_code == 409:
                self.conflicts_sent += 1
            return _error(injected.error_code, injected.description, injected.retry_after)
        if method == "getUpdates":
            return await self._get_updates(params, request)
        handler = _HANDLERS.get(method)
        if handler is None:
            return _error(400, f"Bad Request: method {method!r} not found")
        with self._lock:
            limited = self._over_limit(method, params)
            if limited:
                self.rate_limited += 1
                return _error(429, "Too Many Requests: retry after 1", 1)
            return handler(self, params)

    def _take_error(self, method: str, params: dict[str, Any]) -> _Injected | None:
        queue = self._errors.get(method)
        if not queue:
            return None
        chat = params.get("chat_id")
        for item in queue:
            if item.chat_id is None or str(item.chat_id) == str(chat):
                item.times -= 1
                if item.times <= 0:
                    queue.remove(item)
                return item
        return None

    def _over_limit(self, method: str, params: dict[str, Any]) -> bool:
        if self.limits is None or method not in _LIMITED:
            return False
        now = time.monotonic()
        chat_id = int(params.get("chat_id", 0))
        last = self._chat_last_send.get(chat_id)
        while self._global_window and now - self._global_window[0] > 1.0:
            self._global_window.popleft()
        if last is not None and now - last < self.limits.per_chat_interval_s:
            self.rate_limited_by["chat"] += 1
            return True
        if len(self._global_window) >= self.limits.global_per_s:
            self.rate_limited_by["global"] += 1
            return True
        self._chat_last_send[chat_id] = now
        self._global_window.append(now)
        return False

    async def _get_updates(self, params: dict[str, Any], request: Request) -> JSONResponse:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        with self._lock:
            # a newer getUpdates terminates an older one, as on Telegram
            self._poll_generation += 1
            generation = self._poll_generation
            if offset and self.confirm_offsets:
                self._pending = [u for u in self._pending if u["update_id"] >= offset]
        deadline = time.monotonic() + timeout
        while self.stall_polls and timeout > 0 and not self._closing:
            if await request.is_disconnected():
                return _error(400, "client went away")
            await anyio.sleep(0.01)
        while True:
            if timeout > 0 and await request.is_disconnected():
                # the poller is gone (killed): nobody to terminate, so no 409 is counted
                return _error(400, "client went away")
            with self._lock:
                if generation != self._poll_generation:
                    self.conflicts_sent += 1
                    return _error(
                        409,
                        "Conflict: terminated by other getUpdates request; make sure "
                        "that only one bot instance is running",
                    )
                ready = [u for u in self._pending if u["update_id"] >= offset]
            if ready or time.monotonic() >= deadline or self._closing:
                return _ok(ready[:100])
            await anyio.sleep(0.005)

    def _send_message(self, params: dict[str, Any]) -> JSONResponse:
        chat_id = int(params["chat_id"])
        text = str(params.get("text", ""))
        parse_mode = params.get("parse_mode")
        shown, err = _render(text, parse_mode)
        if err:
            return _error(400, err)
        mid = next(self._msg_ids[chat_id])
        msg = BotMessage(chat_id, mid, shown, text, parse_mode, history=[shown], times=[time.monotonic()])
        self._bot_msgs[(chat_id, mid)] = msg
        self._order.append(msg)
        return _ok(self._message_json(msg))

    def _edit_message_text(self, params: dict[str, Any]) -> JSONResponse:
        key = (int(params["chat_id"]), int(params["message_id"]))
        msg = self._bot_msgs.get(key)
        if msg is None or msg.deleted:
            return _error(400, "Bad Request: message to edit not found")
        text = str(params.get("text", ""))
        parse_mode = params.get("parse_mode")
        shown, err = _render(text, parse_mode)
        if err:
            return _error(400, err)
        if text == msg.raw and parse_mode == msg.parse_mode:
            return _error(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup "
                "of the message",
            )
        msg.text, msg.raw, msg.parse_mode = shown, text, parse_mode
        msg.edits += 1
        msg.history.append(shown)
        msg.times.append(time.monotonic())
        return _ok(self._message_json(msg))

    def _delete_message(self, params: dict[str, Any]) -> JSONResponse:
        msg = self._bot_msgs.get((int(params["chat_id"]), int(params["message_id"])))
        if msg is None or msg.deleted:
            return _error(400, "Bad Request: message to delete not found")
        msg.deleted = True
        return _ok(True)

    def _get_file(self, params: dict[str, Any]) -> JSONResponse:
        found = self.files.get(str(params.get("file_id", "")))
        if found is None:
            return _error(400, "Bad Request: invalid file_id")
        path, data = found
        return _ok(
            {
                "file_id": params["file_id"],
                "file_unique_id": "U" + str(params["file_id"]),
                "file_size": len(data),
                "file_path": path,
            }
        )

    async def _download(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return _error(401, "Unauthorized")
        path = request.path_params["file_path"]
        with self._lock:
            self.downloads.append(request.url.path)
            data = next((d for p, d in self.files.values() if p == path), None)
        if self.fail_downloads:
            return _error(502, "Bad Gateway")
        if data is None:
            return _error(404, "Not Found")
        return Response(data, media_type="application/octet-stream")

    def _send_voice(self, params: dict[str, Any]) -> JSONResponse:
        upload = params.get("_files", {}).get("voice")
        if upload is None:
            return _error(400, "Bad Request: there is no voice in the request")
        name, ctype, data = upload
        chat_id = int(params["chat_id"])
        record = {k: v for k, v in params.items() if k != "_files"}
        self.voices.append({**record, "chat_id": chat_id, "data": data, "filename": name, "type": ctype})
        mid = next(self._msg_ids[chat_id])
        chat = self._chats.get(chat_id, {"id": chat_id, "type": "private", "first_name": "U"})
        file = {"file_id": f"SENT{mid}", "file_unique_id": f"S{mid}", "duration": 1, "file_size": len(data)}
        return _ok(
            {"message_id": mid, "date": int(time.time()), "chat": chat, "from": self.bot_user, "voice": file}
        )

    def _message_json(self, msg: BotMessage) -> dict[str, Any]:
        chat = self._chats.get(msg.chat_id, {"id": msg.chat_id, "type": "private", "first_name": "U"})
        out: dict[str, Any] = {
            "message_id": msg.message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": self.bot_user,
            "text": msg.text,
        }
        if msg.edits:
            out["edit_date"] = int(time.time())
        return out

    def _set_webhook(self, params: dict[str, Any]) -> JSONResponse:
        self.webhook = dict(params)
        return _ok(True)

    def _delete_webhook(self, params: dict[str, Any]) -> JSONResponse:
        self.webhook = {}
        if params.get("drop_pending_updates") in (True, "true", "True"):
            self._pending.clear()
        return _ok(True)

    def _set_my_commands(self, params: dict[str, Any]) -> JSONResponse:
        self.commands = list(params.get("commands") or [])
        return _ok(True)

    # -- running -------------------------------------------------------------------------------

    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/_fake/push", self._control_push, methods=["POST"]),
                Route("/_fake/state", self._control_state, methods=["GET"]),
                Route("/file/bot{token}/{file_path:path}", self._download, methods=["GET"]),
                # the same files on another base, for a configured ``file_base_url``
                Route("/cdn/file/bot{token}/{file_path:path}", self._download, methods=["GET"]),
                Route("/{path:path}", self._handle, methods=["GET", "POST"]),
            ]
        )

    # -- control routes, for a fake running in another process (benches) ----------------------

    async def _control_push(self, request: Request) -> JSONResponse:
        """Body: a list of ``{"chat_id", "user_id", "text"}``; queues one text update each."""
        items = await request.json()
        ids = [self.push_update(self.text_update(i["chat_id"], i["user_id"], i["text"])) for i in items]
        return JSONResponse({"update_ids": ids})

    async def _control_state(self, request: Request) -> JSONResponse:
        with self._lock:
            messages = [
                {
                    "chat_id": m.chat_id,
                    "message_id": m.message_id,
                    "text": m.text,
                    "deleted": m.deleted,
                    "history": m.history,
                    "times": m.times,
                }
                for m in self._order
            ]
            return JSONResponse(
                {
                    "counts": dict(self.counts),
                    "rate_limited": self.rate_limited,
                    "rate_limited_by": dict(self.rate_limited_by),
                    "messages": messages,
                }
            )

    async def serve_forever(self, port: int) -> None:
        """Standalone mode: print ``READY <base_url>`` once listening, stop on SIGINT/SIGTERM."""
        async with self._serving(port):
            print(f"READY {self.base_url}", flush=True)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    return

    def on_bound(self, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}/bot"
        self.base_file_url = f"http://127.0.0.1:{port}/file/bot"


_HANDLERS: dict[str, Callable[[FakeBotAPI, dict[str, Any]], JSONResponse]] = {
    "getMe": lambda f, p: _ok(f.bot_user),
    "deleteWebhook": FakeBotAPI._delete_webhook,
    "setWebhook": FakeBotAPI._set_webhook,
    "getWebhookInfo": lambda f, p: _ok(
        {
            "url": f.webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(f._pending),
        }
    ),
    "sendMessage": FakeBotAPI._send_message,
    "editMessageText": FakeBotAPI._edit_message_text,
    "deleteMessage": FakeBotAPI._delete_message,
    "sendChatAction": lambda f, p: _ok(True),
    "getFile": FakeBotAPI._get_file,
    "sendVoice": FakeBotAPI._send_voice,
    "setMyCommands": FakeBotAPI._set_my_commands,
    "getMyCommands": lambda f, p: _ok(f.commands),
    "close": lambda f, p: _ok(True),
}


def _render(text: str, parse_mode: Any) -> tuple[str, str]:
    """(visible text, error description) like Telegram: parses the entities (HTML errors answer "can't
    parse entities"), trims the result, and measures the 4096 limit on it in UTF-16 code units, as
    the Bot API does (markup is free, a link counts its text only, most emoji count 2)."""
    shown = text
    if parse_mode == "HTML":
        try:
            shown = visible_text(text)
        except HTMLError as exc:
            return "", f"Bad Request: can't parse entities: {exc}"
    elif parse_mode not in (None, ""):
        return "", f"Bad Request: unsupported parse_mode {parse_mode!r}"
    shown = shown.strip()
    if not shown:
        return "", "Bad Request: message text is empty"
    if utf16_len(shown) > MAX_TEXT:
        return "", "Bad Request: message is too long"
    return shown, ""


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of every Bot API length and offset."""
    return len(text.encode("utf-16-le")) // 2


async def _params(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "")
    if "json" in ctype:
        body = await request.body()
        data = json.loads(body) if body else {}
        return dict(data) if isinstance(data, dict) else {}
    form = await request.form()
    params: dict[str, Any] = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    for key, value in form.items():
        if not isinstance(value, str):
            files[key] = (value.filename or "", value.content_type or "", await value.read())
            continue
        params[key] = json.loads(value) if key in _JSON_FIELDS else value
    await form.close()
    if files:
        params["_files"] = files
    params.update({k: v for k, v in request.query_params.items() if k not in params})
    return params


def _ok(result: Any) -> JSONResponse:
    return JSONResponse({"ok": True, "result": result})


def _error(code: int, description: str, retry_after: int | None = None) -> JSONResponse:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return JSONResponse(body, status_code=code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake Telegram Bot API on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--limits", action="store_true", help="enforce Telegram-like flood limits")
    args = parser.parse_args(argv)
    fake = FakeBotAPI(limits=Limits() if args.limits else None)
    anyio.run(fake.serve_forever, args.port)


if __name__ == "__main__":
    main()
