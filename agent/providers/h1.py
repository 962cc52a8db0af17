"""The providers' HTTP/1.1 client: a keep-alive pool of asyncio connections, one socket write per
request, and a response body read straight from the socket's buffer.

Why not httpx: a streamed turn spent ~0.45 ms of CPU in httpx2, httpcore2 and h11 (request and URL
models, the pool's bookkeeping, h11's event machine on every read), more than the rest of the HTTP
exchange together (docs/performance.md, issue 15). The providers need one thing from HTTP: POST a JSON
body and read a (streamed) answer from one configured origin. This module does that and nothing else:

* **connections**: :class:`Pool` keeps up to ``max_keepalive`` idle connections per provider for
  ``keepalive_expiry`` seconds (newest first) and runs at most ``max_connections`` at once (the rest
  wait for one); an idle connection the server closed (EOF, reset) is dropped before it is reused;
  ``https`` uses the same certificates as before (``httpx2.create_ssl_context``: the system's trust
  store, ``SSL_CERT_FILE``);
* **requests**: the request line, the headers and the body go out in ONE ``write`` (a request bigger
  than the socket's buffer is flushed with flow control, as asyncio's streams do);
* **answers**: status line and headers, then a body framed by ``Transfer-Encoding: chunked``,
  ``Content-Length`` or the connection's end (that connection is not reused); ``gzip`` and ``deflate``
  bodies are decompressed as they arrive; 1xx interim answers are skipped;
* **timeouts**: ``connect_timeout`` bounds opening the connection (TLS included), ``read_timeout``
  every single wait for bytes (the headers included), as httpx's ``Timeout`` did;
* **reuse**: a connection goes back to the pool only when its answer was read to the end; an answer
  abandoned midway (a cancelled turn, an error) closes its connection.

Errors are this module's :class:`HTTPError` subclasses, named as httpx named them (``ConnectError``,
``ReadTimeout``, ``RemoteProtocolError``...) because the provider puts the name in its user-facing
message. Proxies are not this module's: when the environment names a proxy for the provider's URL,
:mod:`agent.providers.http` keeps httpx2 for that provider (see docs/providers.md).

The counters (``hero_provider_requests_total``, ``hero_provider_socket_writes_total``,
``hero_provider_connections_opened_total``, ``hero_provider_connections_reused_total``) are in
``/metrics``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Final, cast

import anyio

#: a request line, or a header block, longer than this is refused as a broken answer
MAX_HEAD_BYTES: Final = 64 * 1024
#: how much a socket's outgoing buffer may hold before a write waits for it to drain
WRITE_HIGH_WATER: Final = 256 * 1024
#: the most bytes of an error answer's body read (its text goes into an error message, cut to 200)
MAX_ERROR_BODY: Final = 64 * 1024


class HTTPError(Exception):
    """A transport failure: the connection could not be opened, broke, or spoke no HTTP/1.1."""


class ConnectError(HTTPError):
    pass


class ConnectTimeout(HTTPError):
    pass


class ReadError(HTTPError):
    pass


class ReadTimeout(HTTPError):
    pass


class WriteError(HTTPError):
    pass


class RemoteProtocolError(HTTPError):
    pass


class WriteTimeout(HTTPError):
    pass


class PoolTimeout(HTTPError):
    pass


class UnsupportedProtocol(HTTPError):
    pass


TIMEOUTS: Final = (ConnectTimeout, ReadTimeout, WriteTimeout, PoolTimeout)


@dataclass(slots=True)
class WireStats:
    """What the providers' connections did, for ``/metrics`` (one event loop: plain ints)."""

    #: requests sent
    requests: int = 0
    #: ``write`` calls made on the providers' sockets
    socket_writes: int = 0
    #: connections opened, and requests that went out on a kept-alive one
    connections_opened: int = 0
    connections_reused: int = 0

    def lines(self) -> list[str]:
        out: list[str] = []
        for name, text, value in (
            ("requests", "HTTP requests the LLM providers sent.", self.requests),
            ("socket_writes", "Socket writes those requests took (one each).", self.socket_writes),
            ("connections_opened", "Connections the LLM providers opened.", self.connections_opened),
            (
                "connections_reused",
                "Requests sent on a kept-alive connection (not a new one).",
                self.connections_reused,
            ),
        ):
            out += [
                f"# HELP hero_provider_{name}_total {text}",
                f"# TYPE hero_provider_{name}_total counter",
                f"hero_provider_{name}_total {value}",
            ]
        return out


#: the process's providers' connections
WIRE_STATS = WireStats()


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a pool connects: ``scheme`` is "http" or "https"."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, scheme: str, host: str, port: int | None) -> Origin:
        """The origin of a URL's parts: ``port`` None is the scheme's default."""
        return cls(scheme, host, port or default_port(scheme))

    @property
    def authority(self) -> str:
        """The ``Host`` header's value (the port only when it is not the scheme's default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default_port(self.scheme) else f"{host}:{self.port}"


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: what arrived, waited for one read at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf: list[bytes] = []
        self._eof = False
        self._lost: BaseException | None = None
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        #: ``time.monotonic()`` when it went back to the pool
        self.idle_since = 0.0

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream connection, always (uvloop's transports have the methods, not the base class)
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        self._buf.append(data)
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close the transport: HTTP/1.1 has no use for a half-closed connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._lost = exc
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- ours
    @property
    def reusable(self) -> bool:
        """Open, quiet (nothing unread, no EOF) and not closing: fit for the next request."""
        t = self.transport
        return not (self._closed or self._eof or self._buf or t is None or t.is_closing())

    async def write(self, data: bytes, timeout: float | None) -> None:  # noqa: ASYNC109 - per write
        t = self.transport
        if t is None or self._closed or t.is_closing():
            raise WriteError("the connection is closed")
        t.write(data)
        if self._paused:  # more than the high-water mark is waiting: let the socket take it
            loop = asyncio.get_running_loop()
            self._drain = loop.create_future()
            try:
                with anyio.fail_after(timeout):
                    await self._drain
            except TimeoutError:
                raise WriteTimeout("the request was not sent within the timeout") from None
            finally:
                self._drain = None
            if self._closed:
                raise WriteError("the connection closed while the request was sent")

    async def read(self, timeout: float | None) -> bytes:  # noqa: ASYNC109 - a timer, not a scope
        """What arrived since the last read (waiting up to ``timeout`` for something); ``b""`` at the
        end of the stream."""
        if not self._buf and not (self._eof or self._closed):
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = None if timeout is None else loop.call_later(timeout, _time_out, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        if self._buf:
            data = self._buf[0] if len(self._buf) == 1 else b"".join(self._buf)
            self._buf.clear()
            return data
        if self._lost is not None:
            raise ReadError(f"the connection broke ({type(self._lost).__name__})")
        return b""

    def close(self) -> None:
        self._buf.clear()
        if self.transport is not None:
            self.transport.close()
        self._closed = True


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(ReadTimeout("no bytes within the read timeout"))


class Pool:
    """Kept-alive connections to one origin, used one request at a time each."""

    def __init__(
        self,
        origin: Origin,
        *,
        connect_timeout: float,
        read_timeout: float | None,
        ssl_context: Callable[[], ssl.SSLContext],
        max_connections: int = 256,
        max_keepalive: int = 64,
        keepalive_expiry: float = 60.0,
        stats: WireStats = WIRE_STATS,
    ) -> None:
        if origin.scheme not in ("http", "https"):
            raise UnsupportedProtocol(f"not an http(s) URL scheme: {origin.scheme!r}")
        self.origin = origin
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._ssl_factory = ssl_context
        self._ssl: ssl.SSLContext | None = None
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self.stats = stats
        self._idle: collections.deque[_Connection] = collections.deque()
        #: asyncio's: taking a free slot does not yield (anyio's checks for a cancel and yields)
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False
        self._busy: set[_Connection] = set()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if self.origin.scheme == "https":
            if self._ssl is None:
                self._ssl = self._ssl_factory()
            tls = self._ssl
        try:
            with anyio.fail_after(self.connect_timeout):
                _, conn = await loop.create_connection(
                    _Connection,
                    self.origin.host,
                    self.origin.port,
                    ssl=tls,
                    server_hostname=self.origin.host if tls is not None else None,
                )
        except TimeoutError:
            raise ConnectTimeout("the connection was not opened within the connect timeout") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect ({type(exc).__name__})") from None
        self.stats.connections_opened += 1
        return conn

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the newest: the least likely to have been closed by the server
            if conn.reusable and now - conn.idle_since < self.keepalive_expiry:
                return conn
            conn.close()
        return None

    def _give_back(self, conn: _Connection, reusable: bool) -> None:
        self._busy.discard(conn)
        if not reusable or self._closed or not conn.reusable or len(self._idle) >= self.max_keepalive:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def request(self, head: bytes, body: bytes | None) -> Response:
        """Send ``head`` (the request line and headers, see :func:`request_head`) with ``body`` (None:
        no body) in one write; the answer's status and headers read. The caller reads the body, then
        :meth:`Response.aclose` (or ``async with``) gives the connection back."""
        if self._closed:
            raise ConnectError("the provider's client is closed")
        if self._slots.locked():  # every connection busy: wait for one, as long as for a read
            try:
                with anyio.fail_after(self.read_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise PoolTimeout("no connection became free within the timeout") from None
        else:
            await self._slots.acquire()
        conn: _Connection | None = None
        try:
            conn = self._take_idle()
            if conn is None:
                conn = await self._connect()
            else:
                self.stats.connections_reused += 1
            self._busy.add(conn)
            if body is None:
                data = head + b"\r\n"
            else:
                data = b"%bcontent-length: %d\r\n\r\n%b" % (head, len(body), body)
            self.stats.requests += 1
            self.stats.socket_writes += 1
            # a failed write: read the answer anyway (a server may have answered early and closed)
            with contextlib.suppress(WriteError):
                await conn.write(data, self.read_timeout)
            response = Response(self, conn, head[: head.index(b" ")])
            await response._read_head()
            return response
        except BaseException:
            if conn is not None:
                self._give_back(conn, reusable=False)
            self._slots.release()
            raise

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        for conn in list(self._busy):
            conn.close()
        self._busy.clear()


class Response:
    """An answer's status and headers; its body read once with :meth:`aiter_bytes` or :meth:`aread`.

    ``headers`` maps lower-case names to values (repeated headers joined with ", ")."""

    def __init__(self, pool: Pool, conn: _Connection, method: bytes) -> None:
        self._pool = pool
        self._conn = conn
        self._method = method
        self.status_code = 0
        self.headers: dict[str, str] = {}
        self._rest = b""  # bytes read past the head: the body's start
        self._done = False  # the body was read to its end
        self._released = False
        self._keep_alive = True

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Give the connection back (kept alive only when the body was read to its end)."""
        if self._released:
            return
        self._released = True
        self._pool._give_back(self._conn, reusable=self._done and self._keep_alive)
        self._pool._slots.release()

    async def _read(self) -> bytes:
        return await self._conn.read(self._pool.read_timeout)

    async def _read_head(self) -> None:
        buf = b""
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise RemoteProtocolError("the answer's headers are too long")
                data = await self._read()
                if not data:
                    raise RemoteProtocolError("the server disconnected without sending an answer")
                buf += data
                continue
            head, buf = buf[:end], buf[end + 4 :]
            status = self._parse_head(head)
            if 100 <= status < 200 and status != 101:
                continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._rest = buf
            return

    def _parse_head(self, head: bytes) -> int:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise RemoteProtocolError("the server's answer is not HTTP/1.1")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise RemoteProtocolError("the server sent a malformed header")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.status_code = int(parts[1])
        self.headers = headers
        connection = headers.get("connection", "").lower()
        self._keep_alive = "close" not in connection and (
            parts[0] != b"HTTP/1.0" or "keep-alive" in connection
        )
        return self.status_code

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives, decoded from its transfer framing and content encoding."""
        decoder = _decoder(self.headers.get("content-encoding", ""))
        async for chunk in self._framed():
            if decoder is None:
                yield chunk
            else:
                out = decoder.decompress(chunk)
                if out:
                    yield out
        if decoder is not None:
            tail = decoder.flush()
            if tail:
                yield tail

    async def aread(self, limit: int = MAX_ERROR_BODY) -> bytes:
        """The body (up to ``limit`` bytes; the rest is not read and the connection not reused)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.aiter_bytes():
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
        return b"".join(parts)[:limit]

    def _framed(self) -> AsyncIterator[bytes]:
        status = self.status_code
        if self._method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
            return self._empty()
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._chunked()
        length = self.headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise RemoteProtocolError("the server sent a malformed Content-Length")
            return self._sized(int(length))
        self._keep_alive = False  # the body ends with the connection
        return self._until_close()

    async def _empty(self) -> AsyncIterator[bytes]:
        self._done = True
        nothing: tuple[bytes, ...] = ()
        for piece in nothing:  # an async generator that yields nothing
            yield piece

    async def _sized(self, remaining: int) -> AsyncIterator[bytes]:
        data, self._rest = self._rest, b""
        while True:
            if data:
                if len(data) >= remaining:
                    if remaining:
                        yield data[:remaining]
                    self._done = len(data) == remaining  # more than announced: do not reuse
                    return
                remaining -= len(data)
                yield data
            elif remaining == 0:
                self._done = True
                return
            data = await self._read()
            if not data:
                raise RemoteProtocolError("the server closed the connection in the middle of the answer")

    async def _until_close(self) -> AsyncIterator[bytes]:
        data, self._rest = self._rest, b""
        while True:
            if data:
                yield data
            data = await self._read()
            if not data:
                self._done = True
                return

    async def _chunked(self) -> AsyncIterator[bytes]:
        """Chunked framing; the data of every chunk one socket read completed goes out as ONE piece
        (a server writes an SSE event per chunk: a reader that fell behind catches up at once)."""
        buf, self._rest = self._rest, b""
        pos = 0
        remaining = 0  # data bytes of the current chunk still to come
        state = _SIZE
        while True:
            out: list[bytes] = []
            while True:
                if state == _DATA:
                    if remaining:
                        take = min(remaining, len(buf) - pos)
                        if take:
                            out.append(buf[pos : pos + take])
                            pos += take
                            remaining -= take
                        if remaining:
                            break
                    if len(buf) - pos < 2:
                        break
                    if buf[pos : pos + 2] != b"\r\n":
                        raise RemoteProtocolError("the server sent a malformed chunk")
                    pos += 2
                    state = _SIZE
                elif state == _SIZE:
                    end = buf.find(b"\r\n", pos)
                    if end < 0:
                        if len(buf) - pos > MAX_HEAD_BYTES:
                            raise RemoteProtocolError("the server sent a malformed chunk")
                        break
                    try:
                        remaining = int(buf[pos:end].split(b";", 1)[0].strip(), 16)
                    except ValueError:
                        raise RemoteProtocolError("the server sent a malformed chunk size") from None
                    if remaining < 0:
                        raise RemoteProtocolError("the server sent a malformed chunk size")
                    pos = end + 2
                    state = _DATA if remaining else _TRAILERS
                else:  # trailer fields (none, normally), then the blank line that ends the body
                    if buf.startswith(b"\r\n", pos):
                        end = pos + 2
                    else:
                        found = buf.find(b"\r\n\r\n", pos)
                        if found < 0:
                            if len(buf) - pos > MAX_HEAD_BYTES:
                                raise RemoteProtocolError("the server sent malformed trailers")
                            break
                        end = found + 4
                    if out:
                        yield out[0] if len(out) == 1 else b"".join(out)
                    self._done = end == len(buf)  # bytes after the body: do not reuse
                    return
            if out:
                yield out[0] if len(out) == 1 else b"".join(out)
            more = await self._read()
            if not more:
                raise RemoteProtocolError("the server closed the connection in the middle of the answer")
            buf = buf[pos:] + more if pos < len(buf) else more
            pos = 0


_SIZE, _DATA, _TRAILERS = 0, 1, 2


class _Decompress:
    """A ``gzip`` body, or a ``deflate`` one as servers send it: zlib-wrapped (the standard) or raw
    (what some send; told apart at the first bytes)."""

    def __init__(self, *, gzip: bool) -> None:
        self._d = zlib.decompressobj(zlib.MAX_WBITS | 16 if gzip else zlib.MAX_WBITS)
        self._may_be_raw = not gzip

    def decompress(self, data: bytes) -> bytes:
        try:
            out = self._d.decompress(data)
        except zlib.error:
            if not self._may_be_raw:
                raise RemoteProtocolError("the server sent a body that does not decompress") from None
            self._may_be_raw = False
            self._d = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.decompress(data)
        self._may_be_raw = False
        return out

    def flush(self) -> bytes:
        return self._d.flush()


def _decoder(encoding: str) -> _Decompress | None:
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    if not codings or codings == ["identity"]:
        return None
    if codings in (["gzip"], ["x-gzip"]):
        return _Decompress(gzip=True)
    if codings == ["deflate"]:
        return _Decompress(gzip=False)
    raise RemoteProtocolError(f"the server sent a body in an encoding we did not ask for ({encoding})")


def request_head(method: str, target: str, origin: Origin, headers: Iterable[tuple[str, str]]) -> bytes:
    """A request's line and header block (each line ending in CRLF, without the final blank line)."""
    lines = [f"{method} {target} HTTP/1.1", f"host: {origin.authority}"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"the header {name!r} cannot be sent (a line break or a colon in it)")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")
