"""http_fetch against real uvicorn servers on 127.0.0.1 and 127.0.0.2.

The SSRF guard is proven with two loopback servers: the tool allows only ``127.0.0.2/32`` (through
``tools.http_allow_cidrs``) and refuses everything else internal, so the server on 127.0.0.1 plays the
part of a private address, directly and as a redirect target.
"""

from __future__ import annotations

import gzip
import json
import ssl
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from agent.providers.base import ToolCall
from agent.tools.base import ToolCaller, ToolError
from agent.tools.http_fetch import HttpFetchTool
from agent.tools.registry import ToolRegistry
from config.settings import ToolsSettings
from tests.agent.tools.conftest import CERTS, SCOPE, serve

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

PAGE = """<!doctype html><html><head><title>Test  Page</title><style>body { color: red }</style>
<script>var secret = "do not show";</script></head><body><nav><a href="/">Home</a> | <a href="/x">X</a></nav>
<h1>Welcome</h1><p>First paragraph with <a href="/more">a link</a>.</p>
<ul><li>one</li><li>two</li></ul></body></html>"""
BOMB_BYTES = 32 * 1024 * 1024
#: 32 MB of text in about 32 KB: what a hostile server sends to exhaust memory (made once, here, so
#: that building it does not count in the memory the fetch is measured by)
BOMB = gzip.compress(b"a" * BOMB_BYTES, compresslevel=9)


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-15)
    return packer.compress(data) + packer.flush()


@dataclass
class Site:
    """A small site that records the requests it receives (path and Host header)."""

    hits: list[tuple[str, str]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def record(request: Request) -> None:
            self.hits.append((request.url.path, request.headers.get("host", "")))

        async def page(request: Request) -> Response:
            await record(request)
            return Response(PAGE, media_type="text/html")

        async def data(request: Request) -> Response:
            await record(request)
            return JSONResponse({"answer": 42, "items": [1, 2]})

        async def big(request: Request) -> Response:
            await record(request)
            return PlainTextResponse("x" * 50_000)

        async def slow(request: Request) -> Response:
            await record(request)
            while not await request.is_disconnected():
                await anyio.sleep(0.02)
            return PlainTextResponse("too late")

        async def redirect(request: Request) -> Response:
            await record(request)
            return RedirectResponse(request.query_params["to"], status_code=302)

        async def binary(request: Request) -> Response:
            await record(request)
            return Response(b"\x89PNG\r\n\x1a\n" + bytes(100), media_type="image/png")

        async def bomb(request: Request) -> Response:
            await record(request)
            return Response(BOMB, media_type="text/plain", headers={"content-encoding": "gzip"})

        async def encoded(request: Request) -> Response:
            await record(request)
            encoding = request.query_params["as"]
            text = b"hello from an encoded body " * 100
            makers: dict[str, Callable[[], bytes]] = {
                "gzip": lambda: gzip.compress(text),
                "deflate": lambda: zlib.compress(text),
                # a raw deflate stream without the zlib header, as some servers send "deflate"
                "raw-deflate": lambda: _raw_deflate(text),
                "br": lambda: b"not really brotli",
            }
            body = makers[encoding]()
            header = "deflate" if encoding == "raw-deflate" else encoding
            return Response(body, media_type="text/plain", headers={"content-encoding": header})

        async def missing(request: Request) -> Response:
            await record(request)
            return PlainTextResponse("no such page", status_code=404)

        return Starlette(
            routes=[
                Route("/page", page),
                Route("/data", data),
                Route("/big", big),
                Route("/slow", slow),
                Route("/redirect", redirect),
                Route("/binary", binary),
                Route("/missing", missing),
                Route("/bomb", bomb),
                Route("/encoded", encoded),
            ]
        )


@dataclass
class Servers:
    allowed: str  # http://127.0.0.2:PORT
    allowed_site: Site
    private: str  # http://127.0.0.1:PORT
    private_site: Site


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    allowed_site, private_site = Site(), Site()
    async with (
        serve(allowed_site.app(), "127.0.0.2") as allowed,
        serve(private_site.app(), "127.0.0.1") as private,
    ):
        yield Servers(allowed, allowed_site, private, private_site)


def tool(**overrides: object) -> HttpFetchTool:
    base = {"http_allow_cidrs": ("127.0.0.2/32",), "http_timeout_s": 5.0}
    return HttpFetchTool(ToolsSettings(**(base | overrides)))  # type: ignore[arg-type]


async def fetch(t: HttpFetchTool, url: str, ctx: ToolCaller, **args: object) -> str:
    with anyio.fail_after(15):
        result = await t.run({"url": url, **args}, ctx)
    assert result.ok, result.content
    return result.content


async def refused(t: HttpFetchTool, url: str, ctx: ToolCaller) -> str:
    with anyio.fail_after(15), pytest.raises(ToolError) as info:
        await t.run({"url": url}, ctx)
    return str(info.value)


async def test_html_becomes_readable_text_title_first(servers: Servers, ctx: ToolCaller) -> None:
    out = await fetch(tool(), f"{servers.allowed}/page", ctx)
    header, _, body = out.partition("\n\n")
    assert "Status: 200" in header and "Content-Type: text/html" in header
    assert "Title: Test Page" in header
    assert body.splitlines() == ["# Welcome", "", "First paragraph with a link.", "", "- one", "- two"]
    assert "secret" not in out and "color" not in out and "Home" not in out


async def test_json_and_text_pass_through(servers: Servers, ctx: ToolCaller) -> None:
    out = await fetch(tool(), f"{servers.allowed}/data", ctx)
    assert json.loads(out.partition("\n\n")[2]) == {"answer": 42, "items": [1, 2]}


async def test_loopback_server_is_refused_without_a_request(servers: Servers, ctx: ToolCaller) -> None:
    message = await refused(tool(), f"{servers.private}/page", ctx)
    assert "127.0.0.1" in message and "loopback" in message
    assert servers.private_site.hits == []


async def test_redirect_to_a_private_address_is_refused(servers: Servers, ctx: ToolCaller) -> None:
    url = f"{servers.allowed}/redirect?to={servers.private}/page"
    message = await refused(tool(), url, ctx)
    assert "127.0.0.1" in message
    assert [path for path, _ in servers.allowed_site.hits] == ["/redirect"]
    assert servers.private_site.hits == []


async def test_allowed_redirects_are_followed_and_reported(servers: Servers, ctx: ToolCaller) -> None:
    url = f"{servers.allowed}/redirect?to=/page"
    out = await fetch(tool(), url, ctx)
    assert f"URL: {servers.allowed}/page" in out and f"(redirected from {url})" in out
    assert "# Welcome" in out


async def test_redirect_loops_stop_at_the_limit(servers: Servers, ctx: ToolCaller) -> None:
    url = f"{servers.allowed}/redirect?to=/redirect?to=/redirect?to=/page"
    message = await refused(tool(http_max_redirects=2), url, ctx)
    assert "too many redirects" in message
    assert len(servers.allowed_site.hits) == 3


async def test_with_allow_private_loopback_is_fetched(servers: Servers, ctx: ToolCaller) -> None:
    out = await fetch(
        tool(http_allow_private=True), f"{servers.allowed}/redirect?to={servers.private}/page", ctx
    )
    assert "# Welcome" in out
    assert [p for p, _ in servers.private_site.hits] == ["/page"]


async def test_body_is_cut_at_the_byte_limit(servers: Servers, ctx: ToolCaller) -> None:
    out = await fetch(tool(http_max_bytes=1000), f"{servers.allowed}/big", ctx)
    body = out.partition("\n\n")[2]
    assert body.startswith("x" * 1000) and "x" * 1001 not in body
    assert "[truncated: the response is larger than 1000 bytes" in out


async def test_a_compressed_body_never_expands_past_the_cap_in_memory(
    servers: Servers, ctx: ToolCaller
) -> None:
    t = tool(http_max_bytes=100_000)
    tracemalloc.start()
    try:
        out = await fetch(t, f"{servers.allowed}/bomb", ctx, max_chars=50)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "a" * 50 in out and "[truncated: the response is larger than 100000 bytes" in out
    # the 32 MB the body inflates to were never held: only about the cap (and the server's own copy
    # of the compressed body, which this process also holds, being the server too)
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_gzip_and_deflate_bodies_are_decoded(encoding: str, servers: Servers, ctx: ToolCaller) -> None:
    out = await fetch(tool(), f"{servers.allowed}/encoded?as={encoding}", ctx)
    assert out.count("hello from an encoded body") == 100


async def test_an_unsupported_content_encoding_is_an_error(servers: Servers, ctx: ToolCaller) -> None:
    message = await refused(tool(), f"{servers.allowed}/encoded?as=br", ctx)
    assert "unsupported content encoding: 'br'" in message


async def test_the_fetch_asks_only_for_encodings_it_can_bound(servers: Servers, ctx: ToolCaller) -> None:
    seen: list[str] = []

    async def echo(request: Request) -> Response:
        seen.append(request.headers.get("accept-encoding", ""))
        return PlainTextResponse("ok")

    async with serve(Starlette(routes=[Route("/", echo)]), "127.0.0.2") as base:
        await fetch(tool(), f"{base}/", ctx)
    assert seen == ["gzip, deflate"]


async def test_text_is_cut_at_max_chars(servers: Servers, ctx: ToolCaller) -> None:
    out = await fetch(tool(), f"{servers.allowed}/big", ctx, max_chars=300)
    assert "x" * 300 in out and "x" * 301 not in out
    assert "[truncated: showing the first 300 of 50000 characters]" in out


async def test_a_slow_server_times_out(servers: Servers, ctx: ToolCaller) -> None:
    message = await refused(tool(http_timeout_s=0.3), f"{servers.allowed}/slow", ctx)
    assert "timed out after 0.3 s" in message
    assert [p for p, _ in servers.allowed_site.hits] == ["/slow"]


async def test_binary_content_is_not_returned(servers: Servers, ctx: ToolCaller) -> None:
    message = await refused(tool(), f"{servers.allowed}/binary", ctx)
    assert "image/png" in message and "not text" in message


async def test_http_errors_are_error_results(servers: Servers, ctx: ToolCaller) -> None:
    result = await tool().run({"url": f"{servers.allowed}/missing"}, ctx)
    assert not result.ok
    assert result.content.startswith("error: HTTP 404") and "no such page" in result.content


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://localhost/",
        "http://2130706433/",  # 127.0.0.1 written as one number
        "http://[::ffff:127.0.0.1]/",
    ],
)
async def test_internal_targets_are_refused_without_connecting(url: str, ctx: ToolCaller) -> None:
    message = await refused(tool(), url, ctx)
    assert message.startswith(f"refused to fetch {url}")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/", "/relative"])
async def test_non_http_schemes_are_refused(url: str, ctx: ToolCaller) -> None:
    assert "only http and https" in await refused(tool(), url, ctx)


async def test_credentials_in_the_url_are_refused(ctx: ToolCaller) -> None:
    assert "credentials" in await refused(tool(), "http://user:pw@example.com/", ctx)


async def test_connects_to_the_checked_address_with_the_original_host(
    servers: Servers, ctx: ToolCaller
) -> None:
    """DNS rebinding: the name is resolved once, checked, and that very address is connected to."""
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.2"] if len(lookups) == 1 else ["127.0.0.1"]  # a second lookup would rebind

    port = servers.allowed.rsplit(":", 1)[1]
    t = HttpFetchTool(ToolsSettings(http_allow_cidrs=("127.0.0.2/32",)), resolver=resolver)
    out = await fetch(t, f"http://rebind.example:{port}/page", ctx)
    assert "# Welcome" in out
    assert lookups == ["rebind.example"]
    assert servers.allowed_site.hits == [("/page", f"rebind.example:{port}")]


async def test_every_resolved_address_must_pass(ctx: ToolCaller) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.1.2.3"]

    t = HttpFetchTool(ToolsSettings(), resolver=resolver)
    assert "10.1.2.3" in await refused(t, "http://mixed.example/", ctx)


async def test_through_the_registry_a_refusal_is_an_audited_error(servers: Servers, ctx: ToolCaller) -> None:
    registry = ToolRegistry([tool()])
    call = ToolCall("c1", "http_fetch", json.dumps({"url": f"{servers.private}/page"}))
    result = await registry.execute(call, ctx, timeout_s=10, max_result_chars=4000)
    assert not result.ok and result.content.startswith("error: refused to fetch")
    audit = (await ctx.store.records.list_audit(SCOPE)).items
    assert [(a.tool, a.ok) for a in audit] == [("http_fetch", False)]


async def test_https_to_a_pinned_address_verifies_the_original_host_name(ctx: ToolCaller) -> None:
    """TLS with the IP pinned: SNI and certificate checks use the URL's host name, not the IP."""
    site = Site()
    trust = ssl.create_default_context(cafile=str(CERTS / "ca.pem"))

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.2"]

    t = HttpFetchTool(ToolsSettings(http_allow_cidrs=("127.0.0.2/32",)), resolver=resolver, verify=trust)
    async with serve(site.app(), "127.0.0.2", tls=True) as url:
        port = url.rsplit(":", 1)[1]
        out = await fetch(t, f"https://pinned.test:{port}/page", ctx)
        assert out.startswith(f"URL: https://pinned.test:{port}/page") and "# Welcome" in out
        assert site.hits == [("/page", f"pinned.test:{port}")]
        # the same server under a name its certificate does not carry: verification must fail
        message = await refused(t, f"https://other.test:{port}/page", ctx)
        assert "CERTIFICATE_VERIFY_FAILED" in message and "Hostname mismatch" in message
        assert len(site.hits) == 1
