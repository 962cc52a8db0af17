"""Server-sent events: framing, and an ASGI response that runs one producer under three watchers.

The producer (a turn) writes events through ``emit``. While it runs:

* a client disconnect (``http.disconnect`` on ``receive``) cancels it -- the documented semantics:
  the turn is cancelled and the agent stores the partial reply marked ``interrupted``;
* the app's shutdown event starts a countdown of ``shutdown_deadline_s``; when it runs out the producer
  is cancelled and ``on_cut`` writes a final event, so clients see a clean end instead of a broken
  chunked read (uvicorn would otherwise cancel the connection itself);
* a comment line every ``keepalive_s`` keeps idle proxies from closing a long turn.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import orjson
import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from channels.web.state import WebState

log = structlog.get_logger("hero.web")

SendChunk = Callable[[bytes], Awaitable[None]]
Producer = Callable[[SendChunk], Awaitable[None]]
#: writes the final event when the producer was cut short; the reason is "shutdown" or "internal_error"
OnCut = Callable[[SendChunk, str], Awaitable[None]]

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx and friends buffer responses unless told not to
    "X-Accel-Buffering": "no",
}


def sse_event(event: str, data: dict[str, Any]) -> bytes:
    """One typed event: ``event: NAME`` and a single-line JSON ``data`` (compact, UTF-8: orjson, one
    per streamed delta, ~20x faster than json's; json for what orjson refuses)."""
    try:
        payload = orjson.dumps(data)
    except TypeError:
        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return b"event: %b\ndata: %b\n\n" % (event.encode(), payload)


def sse_data(payload: str) -> bytes:
    """One untyped event (the OpenAI stream format)."""
    return f"data: {payload}\n\n".encode()


class EventStreamResponse(Response):
    """An ASGI response streaming ``text/event-stream`` from ``produce`` (see the module docstring)."""

    def __init__(
        self,
        state: WebState,
        produce: Producer,
        on_cut: OnCut,
        *,
        headers: dict[str, str] | None = None,
        keepalive_s: float = 15.0,
    ) -> None:
        # Response.__init__ is not called: there is no body to render, only the stream below
        self.status_code = 200
        self.background = None
        self.state = state
        self.produce = produce
        self.on_cut = on_cut
        self.extra_headers = {**SSE_HEADERS, **(headers or {})}
        self.keepalive_s = keepalive_s
        #: how the stream ended: "complete", "disconnected", "shutdown" or "internal_error"
        self.outcome = "complete"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        raw_headers += [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.extra_headers.items()
        ]
        # asyncio's: taking a free lock does not yield. anyio's always yields once (a checkpoint), and
        # per delta that was one more trip through a busy event loop before the bytes went out
        lock = asyncio.Lock()

        async def emit(chunk: bytes) -> None:
            # the producer and the keep-alive ticker share one connection: one writer at a time
            async with lock:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        self.state.metrics.active_streams += 1
        try:
            await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
            work = anyio.CancelScope()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_disconnect, receive, work)
                tg.start_soon(self._watch_shutdown, work)
                tg.start_soon(self._keepalive, emit)
                with work:
                    try:
                        await self.produce(emit)
                    except Exception as exc:
                        log.exception("web.stream_failed", error_type=type(exc).__name__)
                        self.outcome = "internal_error"
                if not work.cancelled_caught and self.outcome != "internal_error":
                    # finished on its own: a watcher that fired in the same instant changes nothing
                    self.outcome = "complete"
                tg.cancel_scope.cancel()
            if self.outcome in ("shutdown", "internal_error"):
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self.on_cut(emit, self.outcome)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.state.metrics.active_streams -= 1

    async def _watch_disconnect(self, receive: Receive, work: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if self.outcome == "complete":
                    self.outcome = "disconnected"
                work.cancel()
                return

    async def _watch_shutdown(self, work: anyio.CancelScope) -> None:
        await self.state.shutdown.wait()
        await anyio.sleep(self.state.deadline_s)
        if self.outcome == "complete":
            self.outcome = "shutdown"
        work.cancel()

    async def _keepalive(self, emit: SendChunk) -> None:
        while True:
            await anyio.sleep(self.keepalive_s)
            await emit(b": keep-alive\n\n")


async def run_guarded(state: WebState, receive: Receive, work: Callable[[], Awaitable[None]]) -> str:
    """Run ``work`` (an answer that does not stream) under the same rules as a stream: a client
    disconnect cancels it, and once shutdown starts it gets ``shutdown_deadline_s`` before it is
    cancelled. Returns "complete", "disconnected" or "shutdown"."""
    outcome = "complete"
    async with anyio.create_task_group() as tg:

        async def watch_shutdown() -> None:
            nonlocal outcome
            await state.shutdown.wait()
            await anyio.sleep(state.deadline_s)
            outcome = "shutdown"
            tg.cancel_scope.cancel()

        async def watch_disconnect() -> None:
            nonlocal outcome
            while (await receive())["type"] != "http.disconnect":
                pass
            outcome = "disconnected"
            tg.cancel_scope.cancel()

        tg.start_soon(watch_shutdown)
        tg.start_soon(watch_disconnect)
        await work()
        tg.cancel_scope.cancel()
    return outcome
