"""Webhook mode: a small Starlette route on its own uvicorn, feeding PTB's update queue.

Telegram POSTs each update to ``webhook_url`` (a reverse proxy terminating TLS forwards it to
``webhook_host:webhook_port`` + ``webhook_path``) with the header ``X-Telegram-Bot-Api-Secret-Token``
set to the secret given to ``setWebhook``. Requests without the right secret get 403 and are dropped.
A webhook server that dies while the daemon runs stops the daemon (exit 1), as the web channel's does.
"""

from __future__ import annotations

import asyncio
import hmac
import json

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from telegram import Bot, Update

from channels.serving import ServedApp

log = structlog.get_logger("channels.telegram")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 1_048_576


class WebhookServer:
    """Serves ``path`` on ``host:port`` (port 0 picks a free one; :attr:`port` tells which)."""

    def __init__(
        self, bot: Bot, queue: asyncio.Queue[object], *, host: str, port: int, path: str, secret: str
    ) -> None:
        self._bot = bot
        self._queue = queue
        self.path = path if path.startswith("/") else f"/{path}"
        self._secret = secret
        self._served = ServedApp("telegram: the webhook server", host, port, start_timeout_s=10)
        self.received = 0

    def app(self) -> Starlette:
        return Starlette(routes=[Route(self.path, self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self._secret.encode()):
            log.warning("telegram.webhook_forbidden", client=request.client.host if request.client else "")
            return JSONResponse({"ok": False, "error": "forbidden"}, status_code=403)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"ok": False, "error": "too large"}, status_code=413)
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                raise ValueError("not an update")
            update = Update.de_json(data, self._bot)
        except (ValueError, TypeError, KeyError):
            return JSONResponse({"ok": False, "error": "malformed update"}, status_code=400)
        self.received += 1
        await self._queue.put(update)
        return JSONResponse({"ok": True})

    @property
    def port(self) -> int:
        """The bound port after ``start`` (port 0 picks a free one)."""
        return self._served.port

    async def start(self) -> None:
        """Bind and serve; raises OSError when the address is taken."""
        config = uvicorn.Config(
            self.app(), lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=2
        )
        await self._served.start(config)
        log.info("telegram.webhook_listening", host=self._served.host, port=self.port, path=self.path)

    async def serving(self) -> None:
        """Raises ChannelCrashed when the webhook's server dies (see ``ServedApp.serving``)."""
        await self._served.serving()

    async def stop(self) -> None:
        await self._served.stop(wait_s=5)  # a crash was reported already
