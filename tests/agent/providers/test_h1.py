"""The providers' HTTP/1.1 client (agent/providers/h1.py): against FakeOpenAI over real HTTP, and
against scripted servers on 127.0.0.1 that send exactly the bytes a case needs."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx2
import pytest

from agent.metrics import TurnMetrics
from agent.providers import h1
from agent.providers.base import ChatMessage, TextChunk
from agent.providers.h1 import WIRE_STATS
from agent.providers.http import env_proxy
from agent.providers.openai import OpenAIProvider
from tests.agent.providers.conftest import events_of, fast_settings, user_request
from tests.fakes.openai_server import FakeOpenAI, reply_text
from tests.waiting import until

pytestmark = pytest.mark.anyio


async def test_each_request_takes_one_socket_write_on_a_reused_connection(fake_openai: FakeOpenAI) -> None:
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    requests, writes = WIRE_STATS.requests, WIRE_STATS.socket_writes
    try:
        for i in range(3):
            fake_openai.enqueue(reply_text(f"answer {i}", chunks=2))
            events = await events_of(provider, user_request(f"question {i} " * 500))
            assert "".join(e.text for e in events if isinstance(e, TextChunk)) == f"answer {i}"
    finally:
        await provider.aclose()
    # the request line, the headers and the body went out in one write
    assert WIRE_STATS.requests - requests == 3
    assert WIRE_STATS.socket_writes - writes == 3
    # the whole request arrived (headers and the body the server parsed)
    assert [b["messages"][-1]["content"] for b in fake_openai.requests] == [
        f"question {i} " * 500 for i in range(3)
    ]
    assert len({e["peer"] for e in fake_openai.exchanges}) == 1  # one kept-alive connection


async def test_a_request_bigger_than_the_hold_still_arrives_whole(fake_openai: FakeOpenAI) -> None:
    big = "x" * (300 * 1024)
    fake_openai.enqueue(reply_text("ok"))
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    try:
        events = await events_of(provider, user_request(messages=(ChatMessage("user", big),)))
    finally:
        await provider.aclose()
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == "ok"
    assert fake_openai.requests[0]["messages"][-1]["content"] == big


async def test_the_write_counters_are_in_metrics(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_text("ok"))
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    try:
        await events_of(provider, user_request())
    finally:
        await provider.aclose()
    text = "\n".join(TurnMetrics().render_lines())
    assert f"hero_provider_requests_total {WIRE_STATS.requests}" in text
    assert f"hero_provider_socket_writes_total {WIRE_STATS.socket_writes}" in text
    assert WIRE_STATS.requests >= 1


# -- the client against scripted servers on 127.0.0.1 (raw bytes on a real socket) -------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP server answering each connection with ``handler``; yields its port and, per connection
    accepted, its number (how many connections the client opened)."""
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(len(accepted) + 1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (by its Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def pool(port: int, *, read_timeout: float = 2.0) -> h1.Pool:
    return h1.Pool(
        h1.Origin("http", "127.0.0.1", port),
        connect_timeout=2.0,
        read_timeout=read_timeout,
        ssl_context=ssl.create_default_context,
        stats=h1.WireStats(),
    )


def head(port: int, path: str = "/v1/x") -> bytes:
    return h1.request_head("POST", path, h1.Origin("http", "127.0.0.1", port), [("accept", "*/*")])


async def body_of(p: h1.Pool, port: int, payload: bytes = b"{}") -> tuple[int, list[bytes]]:
    async with await p.request(head(port), payload) as resp:
        return resp.status_code, [piece async for piece in resp.aiter_bytes()]


async def answer_of(handler: Handler, pools: list[h1.Pool] | None = None) -> tuple[int, list[bytes]]:
    """One request to a server answering with ``handler``: the status and the body's pieces. The
    pool goes into ``pools`` first, for a handler that paces its writes by the client's reads
    (:func:`client_reading`)."""
    async with raw_server(handler) as (port, _):
        p = pool(port)
        if pools is not None:
            pools.append(p)
        try:
            return await body_of(p, port)
        finally:
            await p.aclose()


def waiting_read(pools: list[h1.Pool]) -> object | None:
    """The read the client waits in, having taken every byte that arrived (None: it is not waiting)."""
    for p in pools:
        for conn in p._busy:
            if conn._waiter is not None and not conn._buf:
                return conn._waiter
    return None


async def client_reading(pools: list[h1.Pool], after: object | None) -> object:
    """Until the client waits in a read that started after the read ``after`` (which the last write
    woke): it took everything sent so far, and the next write is a read of its own (a server pacing
    its writes by the client, not by the clock). Returns that read, the next call's ``after``."""

    def new_read() -> tuple[object] | None:
        # in a tuple: ``until`` awaits an awaitable answer, and the read is a future
        read = waiting_read(pools)
        return (read,) if read is not None and read is not after else None

    (read,) = await until(new_read, what="the client waiting for more bytes")
    return read


CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


async def test_the_request_goes_out_whole_with_its_host_and_length() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async with raw_server(handler) as (port, _):
        p = pool(port)
        try:
            status, pieces = await body_of(p, port, b'{"a":"\xc3\xa9"}')
        finally:
            await p.aclose()
    assert (status, b"".join(pieces)) == (200, b"ok")
    request_head, request_body = seen[0]
    assert request_head.startswith(b"POST /v1/x HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n" % port)
    assert b"content-length: 10\r\n" in request_head
    assert request_body == b'{"a":"\xc3\xa9"}'


async def test_chunks_completed_by_one_read_come_out_as_one_piece_and_split_ones_are_joined() -> None:
    pools: list[h1.Pool] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        read = waiting_read(pools)
        # three chunks in one write, then a chunk cut inside its size line, its data and its CRLF
        writer.write(CHUNKED + b"3\r\nabc\r\n2;ext=1\r\nde\r\n1\r\nf\r\n")
        await writer.drain()
        for part in (b"1", b"0\r\n0123", b"456789abcdef\r", b"\n0\r\n\r\n"):
            read = await client_reading(pools, read)  # each part its own read
            writer.write(part)
            await writer.drain()

    status, pieces = await answer_of(handler, pools)
    assert status == 200
    assert pieces[0] == b"abcdef"  # one read, three chunks: one piece
    assert b"".join(pieces) == b"abcdef0123456789abcdef"
    # a size line cut in two, data cut before its CRLF: each read gives what it completed
    assert pieces == [b"abcdef", b"0123", b"456789abcdef"]


async def test_a_kept_alive_connection_is_reused_and_one_the_server_closed_is_not() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):  # two answers on this connection, then the server closes it
            await read_request(reader)
            writer.write(CHUNKED + b"2\r\nok\r\n0\r\n\r\n")
            await writer.drain()

    async with raw_server(handler) as (port, accepted):
        p = pool(port)
        try:
            for _ in range(2):
                assert await body_of(p, port) == (200, [b"ok"])
            await until(
                lambda: not (p._idle and p._idle[-1].reusable),
                timeout=5,
                interval=0.005,
                what="the server's close to reach the idle connection",
            )
            assert await body_of(p, port) == (200, [b"ok"])
        finally:
            await p.aclose()
    assert accepted == [1, 2]
    assert (p.stats.connections_opened, p.stats.connections_reused) == (2, 1)


async def test_content_length_and_close_delimited_bodies() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel",
        b"lo",
    ]

    pools: list[h1.Pool] = []

    async def sized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        read = waiting_read(pools)
        for n, part in enumerate(answers):
            if n:
                read = await client_reading(pools, read)  # the rest of the body in a read of its own
            writer.write(part)
            await writer.drain()

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nto the end")
        await writer.drain()

    async with raw_server(sized) as (port, _):
        p = pool(port)
        pools.append(p)
        try:
            status, pieces = await body_of(p, port)
            assert (status, b"".join(pieces)) == (200, b"hello")
            assert pieces == [b"hel", b"lo"]  # the body as its two reads brought it
            assert len(p._idle) == 1  # read to its end: kept
        finally:
            await p.aclose()
    async with raw_server(until_close) as (port, _):
        p = pool(port)
        try:
            _, pieces = await body_of(p, port)
            assert b"".join(pieces) == b"to the end"
            assert len(p._idle) == 0  # ended with the connection: not kept
        finally:
            await p.aclose()


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", _raw_deflate)],
    ids=["gzip", "deflate", "raw-deflate"],
)
async def test_compressed_bodies_are_decoded_and_interim_answers_skipped(
    encoding: str, pack: Callable[[bytes], bytes]
) -> None:
    packed = pack(b"data: one\n\ndata: two\n\n")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\ncontent-encoding: %b\r\ncontent-length: %d\r\n\r\n"
        writer.write(head % (encoding.encode(), len(packed)))
        writer.write(packed)
        await writer.drain()

    status, pieces = await answer_of(handler)
    assert status == 200
    assert b"".join(pieces) == b"data: one\n\ndata: two\n\n"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP/1.1"),
        (CHUNKED + b"zz\r\nab\r\n", "chunk size"),
        (CHUNKED + b"2\r\nabXY", "malformed chunk"),
        (CHUNKED + b"5\r\nab", "middle of the answer"),
        (b"HTTP/1.1 200 OK\r\ncontent-encoding: br\r\ncontent-length: 1\r\n\r\nx", "did not ask for"),
        (b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (h1.MAX_HEAD_BYTES + 10), "too long"),
    ],
)
async def test_broken_answers_are_protocol_errors(answer: bytes, message: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with raw_server(handler) as (port, _):
        p = pool(port)
        try:
            with pytest.raises(h1.RemoteProtocolError, match=message):
                await body_of(p, port)
            assert not p._idle and not p._busy  # the broken connection is closed, not pooled
        finally:
            await p.aclose()


async def test_a_server_that_sends_nothing_is_a_read_timeout_and_a_closed_port_a_connect_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # no answer: until the client gives up and closes the connection

    async with raw_server(silent) as (port, _):
        p = pool(port, read_timeout=0.1)
        try:
            with pytest.raises(h1.ReadTimeout):
                await body_of(p, port)
        finally:
            await p.aclose()
    p = pool(port)  # the server is gone: nothing listens there any more
    try:
        with pytest.raises(h1.ConnectError):
            await body_of(p, port)
    finally:
        await p.aclose()


async def test_an_answer_abandoned_midway_closes_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED + b"2\r\nok\r\n")  # and more would follow
        await writer.drain()
        await reader.read()  # until the client closes

    async with raw_server(handler) as (port, _):
        p = pool(port)
        try:
            async with await p.request(head(port), b"{}") as resp:
                async for piece in resp.aiter_bytes():
                    assert piece == b"ok"
                    break
            assert not p._idle and not p._busy
        finally:
            await p.aclose()


async def test_a_proxy_named_by_the_environment_carries_the_requests(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTP_PROXY set, the provider's requests go through the proxy (httpx2 speaks to it)."""
    forwarded: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a forward proxy: an absolute-form request is sent on to its origin, the answer back
        request_head, request_body = await read_request(reader)
        forwarded.append(request_head.split(b"\r\n", 1)[0])
        target = request_head.split(b" ")[1].decode()
        url = httpx2.URL(target)
        up_reader, up_writer = await asyncio.open_connection(url.host, url.port)
        line = b"POST " + url.raw_path + b" HTTP/1.1\r\n"
        rest = request_head.split(b"\r\n", 1)[1].replace(b"keep-alive", b"close")
        up_writer.write(line + rest + request_body)
        await up_writer.drain()
        writer.write(await up_reader.read())
        await writer.drain()
        up_writer.close()

    async with raw_server(proxy) as (port, _):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert env_proxy(httpx2.URL(fake_openai.base_url))
        fake_openai.enqueue(reply_text("through the proxy"))
        provider = OpenAIProvider(fast_settings(fake_openai.base_url))
        try:
            events = await events_of(provider, user_request())
        finally:
            await provider.aclose()
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == "through the proxy"
    assert forwarded == [f"POST {fake_openai.base_url}/chat/completions HTTP/1.1".encode()]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert not env_proxy(httpx2.URL(fake_openai.base_url))
