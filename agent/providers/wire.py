"""One socket write per request: the providers' transport holds what the HTTP client writes until it
starts reading the answer, then sends it in one ``send``.

Why: httpcore writes a request in two pieces, the header block then the body, and each ``send`` on a
connection wakes the server's process (on loopback the sender also runs the receiver's network stack);
on a busy machine each cost 0.3-1 ms of a turn. An HTTP/1.1 client always sends its whole request
before it reads the response, so holding the writes until the first read changes nothing on the wire
but the number of segments. Holding is bounded (:data:`MAX_HELD_BYTES`): a bigger request goes out as
it is written. A failed send is handled as httpcore handles a failed write of a request: the answer
is read anyway (a server may have answered early and closed), and a dead connection fails that read
(the provider maps it to "connection to the LLM provider failed", as before).

The counters (``hero_provider_socket_writes_total`` beside ``hero_provider_requests_total``, in
``/metrics``) show it working: one write per request.
"""

# ruff: noqa: ASYNC109 - httpcore's network stream interface takes its timeouts as arguments

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore2
import httpx2

#: writes are held up to this many bytes; a bigger request is sent as the client writes it
MAX_HELD_BYTES = 256 * 1024


@dataclass(slots=True)
class WireStats:
    """What the providers' connections did, for ``/metrics`` (one event loop: plain ints)."""

    #: requests sent (writes flushed at the first read of the answer)
    requests: int = 0
    #: ``send`` calls made on the providers' sockets
    socket_writes: int = 0

    def lines(self) -> list[str]:
        return [
            "# HELP hero_provider_requests_total HTTP requests the LLM providers sent.",
            "# TYPE hero_provider_requests_total counter",
            f"hero_provider_requests_total {self.requests}",
            "# HELP hero_provider_socket_writes_total Socket writes those requests took (one each "
            "when the request fits the held bytes).",
            "# TYPE hero_provider_socket_writes_total counter",
            f"hero_provider_socket_writes_total {self.socket_writes}",
        ]


#: the process's providers' connections (every provider client shares this transport kind)
WIRE_STATS = WireStats()


class OneWriteStream(httpcore2.AsyncNetworkStream):
    """A connection whose writes are sent together when the client starts reading."""

    def __init__(self, inner: httpcore2.AsyncNetworkStream, stats: WireStats) -> None:
        self._inner = inner
        self._stats = stats
        self._held: list[bytes] = []
        self._held_bytes = 0
        #: written since the last read: the next read starts reading an answer
        self._wrote = False

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        self._wrote = True
        self._held.append(buffer)
        self._held_bytes += len(buffer)
        if self._held_bytes > MAX_HELD_BYTES:
            await self._flush(timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._wrote:
            self._wrote = False
            self._stats.requests += 1
            if self._held:
                # as httpcore treats a failed write of the request: read the answer anyway (a server
                # may have answered early and closed); a dead connection then fails this read
                with contextlib.suppress(httpcore2.WriteError):
                    await self._flush(timeout)
        return await self._inner.read(max_bytes, timeout)

    async def _flush(self, timeout: float | None) -> None:
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        self._stats.socket_writes += 1
        await self._inner.write(data, timeout)

    async def aclose(self) -> None:
        self._held.clear()  # a request abandoned before its answer was read: nothing to send
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.AsyncNetworkStream:
        if self._held:  # a proxy's CONNECT is read before TLS starts; nothing is held here normally
            await self._flush(timeout)
        tls = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return OneWriteStream(tls, self._stats)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class OneWriteBackend(httpcore2.AsyncNetworkBackend):
    """anyio's network backend whose connections are :class:`OneWriteStream`."""

    def __init__(self, stats: WireStats = WIRE_STATS) -> None:
        self._inner = httpcore2.AnyIOBackend()
        self._stats = stats

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return OneWriteStream(stream, self._stats)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)
        return OneWriteStream(stream, self._stats)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def one_write_transport(limits: httpx2.Limits) -> httpx2.AsyncHTTPTransport:
    """httpx2's own transport (certificates from the system, as a default client) whose connection
    pool uses :class:`OneWriteBackend`. Proxies from the environment keep httpx2's own transports."""
    transport = httpx2.AsyncHTTPTransport(limits=limits)
    # httpx2 builds its pool without a way to pass a network backend: the same pool, with ours
    transport._pool = httpcore2.AsyncConnectionPool(
        ssl_context=httpx2.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=OneWriteBackend(),
    )
    return transport
