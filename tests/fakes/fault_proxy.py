"""A TCP proxy at the network seam that breaks ONE HTTP/1.1 exchange at a chosen stage.

It sits between a client and a real server on 127.0.0.1 and forwards faithfully, except that after
:meth:`FaultProxy.arm` the next exchange that reaches the armed stage is broken there, the way a server
that stops (gracefully or not), a dying peer or a stalled middlebox would break it:

========================  =========================================================================
``accept_close``          a new connection is closed at once, before anything is read
``accept_stall``          a new connection is held open and never read
``request_close``         the request is read, then the connection closes (nothing reaches the server)
``request_stall``         the request is read and never forwarded nor answered
``reuse_close``           a request arriving on a reused keep-alive connection: closed unforwarded
``answer_lost``           the server ran the request; its answer is dropped and the connection closed
``answer_half_close``     half of the answer is sent, then the connection closes
``answer_half_stall``     half of the answer is sent, then nothing more
``answer_trickle``        the answer is sent one byte at a time, slowly, never quite stalling
``idle_close``            the answer is sent whole, then the keep-alive connection closes
========================  =========================================================================

Arming a stage that needs a new connection (``accept_*``) first closes every open client connection,
as a server closes its idle keep-alive connections when it stops. ``fired`` lists the faults that ran.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

STAGES = (
    "accept_close",
    "accept_stall",
    "request_close",
    "request_stall",
    "reuse_close",
    "answer_lost",
    "answer_half_close",
    "answer_half_stall",
    "answer_trickle",
    "idle_close",
)
_GONE = (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError)
#: the pause between two bytes of a trickled answer (shorter than any read timeout of the tests)
TRICKLE_S = 0.05


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.armed = ""
        self.fired: list[str] = []
        self._connections: set[anyio.CancelScope] = set()
        self._all_closed = anyio.Event()

    async def arm(self, stage: str) -> None:
        """Break the next exchange at ``stage``; for a connection stage, first close every open
        connection (and wait until they are closed) so that the client has to connect again."""
        assert stage in STAGES, stage
        self.armed = stage
        if stage.startswith("accept_") and self._connections:
            self._all_closed = anyio.Event()
            for scope in list(self._connections):
                scope.cancel()
            await self._all_closed.wait()

    def _take(self, stage: str) -> bool:
        if self.armed != stage:
            return False
        self.armed = ""
        self.fired.append(stage)
        return True

    async def _handle(self, client: SocketStream) -> None:
        with anyio.CancelScope() as scope:
            self._connections.add(scope)
            try:
                async with client:
                    await self._exchanges(client)
            except _GONE:
                pass
            finally:
                self._connections.discard(scope)
                if not self._connections:
                    self._all_closed.set()

    async def _exchanges(self, client: SocketStream) -> None:
        if self._take("accept_close"):
            return
        if self._take("accept_stall"):
            await _hold(client)
            return
        incoming = BufferedByteReceiveStream(client)
        async with await anyio.connect_tcp("127.0.0.1", self.upstream_port) as upstream:
            answers = BufferedByteReceiveStream(upstream)
            served = 0
            while True:
                try:
                    request = await _http_message(incoming)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    return  # the client closed its connection
                if (served and self._take("reuse_close")) or self._take("request_close"):
                    return
                if self._take("request_stall"):
                    await _hold(client)
                    return
                await upstream.send(request)
                answer = await _http_message(answers)
                served += 1
                if self._take("answer_lost"):
                    return
                if await self._broken_answer(client, answer):
                    return
                await client.send(answer)
                if self._take("idle_close"):
                    return

    async def _broken_answer(self, client: SocketStream, answer: bytes) -> bool:
        """Sends ``answer`` broken by an armed answer stage; False when no such stage is armed."""
        if self._take("answer_half_close"):
            await client.send(answer[: len(answer) // 2])
            return True
        if self._take("answer_half_stall"):
            await client.send(answer[: len(answer) // 2])
            await _hold(client)
            return True
        if self._take("answer_trickle"):
            for i in range(len(answer)):
                await client.send(answer[i : i + 1])
                await anyio.sleep(TRICKLE_S)
            return True
        return False


async def _http_message(stream: BufferedByteReceiveStream) -> bytes:
    """One HTTP/1.1 request or answer with a Content-Length body (all our server and client send)."""
    head = await stream.receive_until(b"\r\n\r\n", 65536)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await stream.receive_exactly(length) if length else b""
    return head + b"\r\n\r\n" + body


async def _hold(client: SocketStream) -> None:
    """Keep the connection open, reading and dropping whatever comes, until the client leaves."""
    while True:
        await client.receive()


@asynccontextmanager
async def fault_proxy(upstream_port: int) -> AsyncIterator[FaultProxy]:
    """A :class:`FaultProxy` on a free 127.0.0.1 port in front of ``upstream_port``."""
    proxy = FaultProxy(upstream_port)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    proxy.port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, proxy._handle)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()
