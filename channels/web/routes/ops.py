"""Operational routes (no authentication): liveness, readiness, metrics, the OpenAPI document and the
web page.

They expose no user data: ``/metrics`` holds counts only, ``/readyz`` names the failing dependency
without its address or credentials. ``/readyz`` answers 503 when the store or the provider cannot be
reached, and 200 ``{"status": "degraded", ...}`` naming the MCP servers that are not running (the agent
answers, without their tools).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import structlog
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agent.tools.health import ServerHealth, degraded, health_lines
from channels.web.errors import error_response
from channels.web.openapi import openapi_document
from channels.web.state import WebState, web_state
from store import StoreError

log = structlog.get_logger("hero.web")

STATIC_DIR = Path(__file__).parent.parent / "static"  # channels/web/static
READY_TIMEOUT_S = 5.0
#: the page loads only its own files; inline scripts and styles are refused
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = web_state(request)
    try:
        with anyio.fail_after(READY_TIMEOUT_S):
            await state.agent.ping()
    except TimeoutError:
        return error_response(503, "not_ready", "a dependency did not answer in time")
    except StoreError as exc:
        log.warning("web.not_ready", dependency="store", error_type=type(exc).__name__)
        return error_response(503, "not_ready", "the store is not reachable")
    except Exception as exc:
        log.warning("web.not_ready", dependency="provider", error_type=type(exc).__name__)
        return error_response(503, "not_ready", "the LLM provider is not reachable")
    if state.shutdown.is_set():
        return error_response(503, "shutting_down", "the server is shutting down")
    # a tool server that is down degrades the agent (it answers without those tools): still ready
    # a channel's state (Telegram "standby" behind another daemon's poller) is news, not a failure
    channels = dict(state.agent.metrics.channel_states)
    extra = {"channels": channels} if channels else {}
    down = degraded(_tool_servers(state))
    if down:
        return JSONResponse({"status": "degraded", "degraded": {"mcp_servers": down}, **extra})
    return JSONResponse({"status": "ready", **extra})


def _tool_servers(state: WebState) -> list[ServerHealth]:
    tools = state.agent.tools
    return list(tools.servers.values()) if tools is not None else []


async def metrics(request: Request) -> Response:
    state = web_state(request)
    body = state.metrics.render(
        state.agent.metrics,
        [
            *health_lines(_tool_servers(state)),
            *state.agent.pairing.render_lines(),
            *state.agent.media.metrics.render_lines(),
        ],
    )
    return PlainTextResponse(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document(web_state(request).settings))


async def index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS, media_type="text/html")


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/", index, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
]
