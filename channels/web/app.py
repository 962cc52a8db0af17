"""The Starlette application of the web channel: routes, error handlers, CORS, request metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from channels.web.errors import (
    handle_error,
    handle_http_exception,
    handle_unexpected,
)
from channels.web.openai import routes as openai_routes
from channels.web.routes import chat as routes_chat
from channels.web.routes import conversations as routes_conversations
from channels.web.routes import media as routes_media
from channels.web.routes import ops as routes_ops
from channels.web.routes import pairing as routes_pairing
from channels.web.state import WebState
from config.errors import HeroError

if TYPE_CHECKING:
    from agent.core import Agent
    from config import Settings

#: request headers beyond this size (all together) are answered 431
MAX_HEADER_BYTES = 64 * 1024
#: what uvicorn's h11 parser may buffer for one request head, so that oversized heads reach
#: :class:`HeaderLimit` (and get their 431) instead of a reset connection; beyond it h11 gives up
MAX_HEAD_READ_BYTES = 1024 * 1024
#: headers a browser on another origin may send when ``[web] cors_origins`` allows it
CORS_HEADERS = ["Authorization", "Content-Type", "X-Hero-Context", "X-Hero-Conversation"]


class RequestMetrics:
    """Counts answered requests by method and status (pure ASGI: streaming bodies pass untouched)."""

    def __init__(self, app: ASGIApp, state: WebState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.state.metrics.request_finished(scope["method"], int(message["status"]))
            await send(message)

        await self.app(scope, receive, counting_send)


class HeaderLimit:
    """Answers 431 to a request whose headers together exceed ``MAX_HEADER_BYTES``.

    uvicorn's h11 parser drops a request head larger than its buffer limit with a bare 400 and closes
    the connection while the client is still sending, which the client sees as a TCP reset. The web
    channel therefore lets h11 read heads up to ``MAX_HEAD_READ_BYTES`` (``h11_max_incomplete_event_size``)
    and answers oversized ones here, with a proper status and the usual error body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _header_bytes(scope) > MAX_HEADER_BYTES:
            response = JSONResponse(
                {
                    "error": {
                        "code": "headers_too_large",
                        "message": f"the request headers exceed {MAX_HEADER_BYTES // 1024} KiB",
                    }
                },
                status_code=431,
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _header_bytes(scope: Scope) -> int:
    return sum(len(name) + len(value) + 4 for name, value in scope["headers"])


def create_app(settings: Settings, agent: Agent, *, state: WebState | None = None) -> Starlette:
    """The web channel's ASGI app. ``state`` (settings, agent, metrics, shutdown event) is created
    when not given; it is reachable as ``app.state.web``."""
    state = state or WebState(settings, agent)
    middleware = [Middleware(RequestMetrics, state=state), Middleware(HeaderLimit)]
    if settings.web.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.web.cors_origins),
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
                allow_headers=CORS_HEADERS,
                expose_headers=["X-Hero-Conversation"],
            )
        )
    app = Starlette(
        routes=[
            *routes_conversations.ROUTES,
            *routes_chat.ROUTES,
            *routes_media.ROUTES,
            *openai_routes.ROUTES,
            *routes_ops.ROUTES,
            *routes_pairing.ROUTES,
        ],
        middleware=middleware,
        exception_handlers={
            HeroError: handle_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
    )
    app.state.web = state
    return app
