"""A counting TCP relay between the postgres engine and a real PostgreSQL, on loopback.

It forwards every byte unchanged and reads the client's side of the protocol to count *round trips*:
the points where the client waits for the server, i.e. its ``Sync`` messages (the end of an extended
query, or of a whole pipeline) and its simple ``Query`` messages. A pipeline (statements and COMMIT
written together, read back once) is one; a transaction run statement by statement is one per
statement. Used to assert what a turn costs on the wire (tests/store/test_postgres_turn_cost.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from anyio.abc import SocketStream


@dataclass
class Relay:
    """A running relay: connect to ``port`` instead of the server's; ``round_trips`` so far."""

    port: int
    round_trips: int = 0


class _ClientStream:
    """The frontend messages of one connection: untyped start-up packets first (an SSL or GSS
    request, then the startup message), then ``type byte + int32 length + body`` messages."""

    def __init__(self) -> None:
        self.buffer = b""
        self.started = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """The type bytes of every message completed by ``chunk``."""
        self.buffer += chunk
        types: list[bytes] = []
        while True:
            if not self.started:
                if len(self.buffer) < 8:
                    return types
                size = int.from_bytes(self.buffer[:4], "big")
                code = int.from_bytes(self.buffer[4:8], "big")
                if len(self.buffer) < size:
                    return types
                self.buffer = self.buffer[size:]
                self.started = code == 196608  # protocol 3.0: the startup message itself
                continue
            if len(self.buffer) < 5:
                return types
            size = int.from_bytes(self.buffer[1:5], "big")
            if len(self.buffer) < 1 + size:
                return types
            types.append(self.buffer[:1])
            self.buffer = self.buffer[1 + size :]


@asynccontextmanager
async def relay(server_port: int) -> AsyncIterator[Relay]:
    """Relay 127.0.0.1:<a free port> to 127.0.0.1:``server_port`` while the block runs."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
    counting = Relay(port)

    async def serve(client: SocketStream) -> None:
        stream = _ClientStream()
        async with client, await anyio.connect_tcp("127.0.0.1", server_port) as server:

            async def upstream() -> None:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    async for chunk in client:
                        counting.round_trips += sum(t in (b"S", b"Q") for t in stream.feed(chunk))
                        await server.send(chunk)
                with contextlib.suppress(OSError, anyio.BrokenResourceError):
                    await server.send_eof()

            async def downstream() -> None:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    async for chunk in server:
                        await client.send(chunk)
                with contextlib.suppress(OSError, anyio.BrokenResourceError):
                    await client.send_eof()

            async with anyio.create_task_group() as tg:
                tg.start_soon(upstream)
                tg.start_soon(downstream)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        try:
            yield counting
        finally:
            tg.cancel_scope.cancel()
