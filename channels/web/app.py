"""The Starlette application of the web channel: routes, error handlers, CORS, request metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from channels.web import routes_chat, routes_conversations, routes_openai, routes_ops
from channels.web.errors import (
    ApiError,
    handle_api_error,
    handle_http_exception,
    handle_store_error,
    handle_unexpected,
)
from channels.web.state import WebState
from store import StoreError

if TYPE_CHECKING:
    from agent.core import Agent
    from config import Settings

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


def create_app(settings: Settings, agent: Agent, *, state: WebState | None = None) -> Starlette:
    """The web channel's ASGI app. ``state`` (settings, agent, metrics, shutdown event) is created
    when not given; it is reachable as ``app.state.web``."""
    state = state or WebState(settings, agent)
    middleware = [Middleware(RequestMetrics, state=state)]
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
            *routes_openai.ROUTES,
            *routes_ops.ROUTES,
        ],
        middleware=middleware,
        exception_handlers={
            ApiError: handle_api_error,
            StoreError: handle_store_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
    )
    app.state.web = state
    return app
