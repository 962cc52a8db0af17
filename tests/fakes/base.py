"""The machinery both fake LLM servers share: a real uvicorn on a pre-bound 127.0.0.1 socket, a FIFO
of scripted replies, a ``responder`` hook, request recording, and three ways to run.

Why a real server: ``httpx.ASGITransport`` runs the app to completion before answering, so hanging
and dropped streams (the interesting cases) cannot be tested in-process (encode/httpx#2186).
"""

from __future__ import annotations

import logging
import signal
import threading
from abc import abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request

from tests.fakes.served import ServedApp
from tests.fakes.sse_scripts import COMPACTION_MARKER, DEFAULT_SUMMARY, MEMORY_MARKER, Reply, reply_text
from tests.waiting import until

Responder = Callable[[dict[str, Any]], Reply | None]
#: pauses up to this long are slept in one go (shutdown waits at most this much for them)
SHORT_PAUSE_S = 0.1


class DropConnection(Exception):
    """Raised inside a streaming body: uvicorn then closes the socket mid-response (no clean end)."""


class _HideScriptedDrops(logging.Filter):
    """uvicorn logs every exception escaping the app with a traceback; a scripted drop is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DropConnection))


_drop_filter = _HideScriptedDrops()
logging.getLogger("uvicorn.error").addFilter(_drop_filter)  # adding the same object twice is a no-op


class FakeLLMServer(ServedApp):
    """Base of :class:`FakeOpenAI` and :class:`FakeAnthropic`; subclasses add routes and rendering."""

    #: path prefix of ``base_url`` ("/v1" for both APIs)
    prefix = "/v1"

    def __init__(
        self, *, chunk_delay: float = 0.0, tokens: int | None = None, keep_requests: bool = True
    ) -> None:
        self.queue: deque[Reply] = deque()
        self.responder: Responder | None = None
        #: recorded JSON bodies of the completion requests, in arrival order
        self.requests: list[dict[str, Any]] = []
        #: the matching request headers (lower-case names) and client "host:port" (connection reuse)
        self.headers: list[dict[str, str]] = []
        self.peers: list[str] = []
        #: False: keep none of them (a fake in a process of its own, where nobody can read them: a
        #: soak's 50,000 request bodies, each with its window, held ~100 KB per turn)
        self.keep_requests = keep_requests
        self.chunk_delay = chunk_delay
        #: when set, the default echo answer is streamed as exactly this many chunks (benches)
        self.tokens = tokens
        #: when set, requests must carry this key or get the API's 401
        self.api_key: str | None = None
        self.models: list[str] = ["fake-model"]
        self.base_url = ""
        self.port = 0
        self._closing = False
        self._cond = threading.Condition()

    # -- scripting ------------------------------------------------------------------------------

    def enqueue(self, *items: Reply) -> None:
        """Answer the next requests with these replies, in order."""
        self.queue.extend(items)

    @property
    def request_count(self) -> int:
        return len(self.requests)

    def record(self, body: dict[str, Any], request: Request) -> dict[str, str]:
        headers = {k.lower(): v for k, v in request.headers.items()}
        peer = f"{request.client.host}:{request.client.port}" if request.client else ""
        with self._cond:
            if self.keep_requests:
                self.peers.append(peer)
                self.requests.append(body)
                self.headers.append(headers)
            self._cond.notify_all()
        return headers

    def next_reply(self, body: dict[str, Any]) -> Reply:
        if self.queue:
            return self.queue.popleft()
        if self.responder is not None:
            scripted = self.responder(body)
            if scripted is not None:
                return scripted
        return self.default_reply(body)

    def default_reply(self, body: dict[str, Any]) -> Reply:
        system = self.system_text(body)
        if MEMORY_MARKER in system:
            return reply_text('{"memories": []}', chunks=1)
        if COMPACTION_MARKER in system:
            return reply_text(DEFAULT_SUMMARY, chunks=2)
        text = f"echo: {self.last_user_text(body)}"
        if self.tokens is None:
            return reply_text(text, chunks=4)
        words = text.split(" ")
        words += ["tok"] * (self.tokens - len(words))
        return reply_text(" ".join(words), chunks=self.tokens)

    @abstractmethod
    def system_text(self, body: dict[str, Any]) -> str:
        """The request's system prompt as plain text (where it lives differs per API)."""

    def last_user_text(self, body: dict[str, Any]) -> str:
        for msg in reversed(body.get("messages") or []):
            if msg.get("role") == "user":
                return content_text(msg.get("content"))
        return ""

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait (from any event loop) until ``n`` requests arrived; AssertionError after ``timeout``."""
        await until(
            lambda: len(self.requests) >= n,
            timeout=timeout,
            interval=0.005,
            what=lambda: f"{n} requests to the fake ({len(self.requests)} arrived)",
        )
        return self.requests

    def wait_for_requests_blocking(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The same for synchronous tests."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise TimeoutError(f"{len(self.requests)} of {n} requests arrived")
        return self.requests

    # -- helpers for the routes -----------------------------------------------------------------

    async def pause(self, seconds: float, request: Request | None = None) -> None:
        """Sleep, but stop early when the server closes (so shutdown never waits on a script). A
        short pause (a chunk gap) is one sleep: polling every 10 ms would cost the fake three wake-ups
        per chunk, which at 200 streams competes with the process under test for the CPU."""
        if seconds <= SHORT_PAUSE_S:
            await anyio.sleep(seconds)
            return
        with anyio.move_on_after(seconds):
            while not self._closing:
                if request is not None and await request.is_disconnected():
                    return
                await anyio.sleep(0.01)

    async def stall(self, request: Request) -> None:
        """Wait until the client goes away or the server closes."""
        while not self._closing and not await request.is_disconnected():
            await anyio.sleep(0.02)

    def delay_for(self, reply: Reply) -> float:
        return self.chunk_delay if reply.chunk_delay is None else reply.chunk_delay

    @abstractmethod
    def build_app(self) -> Starlette:
        """The Starlette app with this API's routes."""

    # -- running (see ServedApp) -----------------------------------------------------------------

    def on_bound(self, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}{self.prefix}"

    async def serve_forever(self, port: int) -> None:
        """Standalone mode: print ``READY <base_url>`` once listening, stop on SIGINT/SIGTERM."""

        async with self._serving(port):
            print(f"READY {self.base_url}", flush=True)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    return


def content_text(content: Any) -> str:
    """Plain text of a message ``content``: a string or a list of text parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and "text" in part
        )
    return ""
