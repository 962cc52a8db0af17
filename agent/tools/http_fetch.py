"""``http_fetch``: one web page or API answer as readable text, behind an SSRF guard.

Safety rules (docs/tools.md has the user-facing version):

- only ``http``/``https``, no credentials in the URL;
- the host is resolved first and EVERY address it resolves to is checked against
  :class:`~agent.tools.net_policy.AddressPolicy` (metadata names are refused before any lookup);
- the connection goes to the checked address itself (the URL's host is replaced by the IP; the
  ``Host`` header and the TLS SNI/certificate name stay the original host), so a DNS answer that
  changes between check and connect (rebinding) cannot redirect the request;
- redirects are followed by hand, at most ``tools.http_max_redirects``, each hop checked the same way;
- proxies from the environment are ignored (a proxy would connect on our behalf, unchecked);
- the whole fetch has one deadline (``tools.http_timeout_s``) and the body is read as a stream and cut
  at ``tools.http_max_bytes`` (after decompression). Only ``gzip`` and ``deflate`` are accepted, and
  they are inflated here, a bounded piece at a time (:class:`_Inflater`), so a small compressed body
  that expands enormously (a "zip bomb") never holds more than the cap in memory.
"""

from __future__ import annotations

import codecs
import socket
import ssl
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import anyio
import httpx
import structlog

from agent.tools.base import Tool, ToolCaller, ToolError, ToolResult
from agent.tools.html_text import html_to_text
from agent.tools.net_policy import AddressPolicy, AddressRefused, IPAddress
from config.settings import ToolsSettings

log = structlog.get_logger()

DEFAULT_MAX_CHARS = 20_000
USER_AGENT = "hero-agent/0.1 (http_fetch tool)"
#: the encodings :class:`_Inflater` decodes with a bound on its output
ACCEPT_ENCODING = "gzip, deflate"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "+json", "+xml")


#: the name-lookup seam: (host, port) -> IP address strings (tests answer with fixed addresses)
Resolver: TypeAlias = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (IPv6 zone ids dropped)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]).split("%", 1)[0] for *_, sockaddr in infos]


@dataclass(frozen=True, slots=True)
class FetchedPage:
    url: str
    status: int
    reason: str
    content_type: str
    body: bytes
    charset: str
    #: the body was cut at the byte limit
    truncated: bool
    redirects: int


class HttpFetchTool(Tool):
    """Fetch a URL and return readable text; refuses internal addresses unless configured."""

    name = "http_fetch"
    description = (
        "Fetch a web page or HTTP API (GET) and return its readable text: HTML is converted to text "
        "(title first), JSON and plain text are returned as they are. Only public internet addresses."
    )
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "description": "An http:// or https:// URL.", "maxLength": 4096},
            "max_chars": {
                "type": "integer",
                "description": f"Longest text to return (default {DEFAULT_MAX_CHARS}).",
                "minimum": 100,
                "maximum": 200_000,
            },
        },
        "required": ["url"],
        "additionalProperties": False,
    }

    def __init__(
        self,
        settings: ToolsSettings,
        *,
        resolver: Resolver | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        """``resolver`` and ``verify`` (the TLS trust, default the system's CA bundle) are seams for
        tests and embedders; the daemon uses the defaults."""
        self.settings = settings
        self.policy = AddressPolicy.from_settings(settings)
        self.resolver: Resolver = resolver or system_resolver
        self.verify: ssl.SSLContext | bool = verify if verify is not None else True

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        url = str(args["url"]).strip()
        max_chars = int(args.get("max_chars", DEFAULT_MAX_CHARS))
        try:
            with anyio.fail_after(self.settings.http_timeout_s):
                page = await self.fetch(url)
        except TimeoutError:
            raise ToolError(f"fetching {url} timed out after {self.settings.http_timeout_s:g} s") from None
        except AddressRefused as exc:
            log.info("http_fetch.refused", url=url[:200], reason=str(exc))
            raise ToolError(f"refused to fetch {url}: {exc}") from None
        return render_page(page, url, max_chars)

    async def fetch(self, url: str) -> FetchedPage:
        """GET ``url`` following redirects by hand; raises ToolError / AddressRefused (no deadline here)."""
        current = parse_url(url)
        timeout = httpx.Timeout(self.settings.http_timeout_s)
        async with httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            timeout=timeout,
            verify=self.verify,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING},
        ) as client:
            for hop in range(self.settings.http_max_redirects + 1):
                addresses = await self.resolve(current)
                response = await _open(client, current, addresses)
                try:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECTS and location:
                        current = parse_url(str(current.join(location)))
                        continue
                    body, truncated = await _read_limited(response, self.settings.http_max_bytes)
                    return FetchedPage(
                        url=str(current),
                        status=response.status_code,
                        reason=response.reason_phrase,
                        content_type=response.headers.get("content-type", ""),
                        body=body,
                        charset=response.charset_encoding or "",
                        truncated=truncated,
                        redirects=hop,
                    )
                finally:
                    await response.aclose()
        raise ToolError(f"too many redirects (more than {self.settings.http_max_redirects})")

    async def resolve(self, url: httpx.URL) -> list[IPAddress]:
        """Every address of the URL's host, each one checked; raises AddressRefused for any bad one."""
        host = url.raw_host.decode("ascii")
        self.policy.check_host(host)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            resolved = await self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise ToolError(f"could not resolve host {url.host!r}: {exc}") from None
        addresses: list[IPAddress] = []
        for address in resolved:
            ip = self.policy.check_address(address)
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise ToolError(f"host {url.host!r} has no address")
        return addresses


def parse_url(url: str) -> httpx.URL:
    """A fetchable absolute URL, or ToolError saying what is wrong with it."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise ToolError(f"invalid URL {url[:200]!r}: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise ToolError(f"only http and https URLs can be fetched, not {parsed.scheme or 'relative'!r} ones")
    if not parsed.host:
        raise ToolError(f"invalid URL {url[:200]!r}: no host")
    if parsed.userinfo:
        raise ToolError("URLs with credentials (user:password@) are not fetched")
    return parsed.copy_with(fragment=None)


async def _open(client: httpx.AsyncClient, url: httpx.URL, addresses: list[IPAddress]) -> httpx.Response:
    """Connect to the first reachable checked address, presenting the original host name."""
    host_header = url.netloc.decode("ascii")
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    last: Exception | None = None
    for ip in addresses:
        request = client.build_request(
            "GET", url.copy_with(host=str(ip)), headers={"Host": host_header}, extensions=extensions
        )
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            last = exc
        except httpx.HTTPError as exc:
            raise ToolError(f"fetching {url} failed: {type(exc).__name__}: {exc}") from None
    raise ToolError(f"could not connect to {url.host}: {last}")


async def _read_limited(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    """The body, decoded, at most ``max_bytes`` of it (and whether it was cut)."""
    inflater = _Inflater(response.headers.get("content-encoding", ""))
    chunks: list[bytes] = []
    size = 0
    try:
        async for raw in response.aiter_raw():
            # one byte more than the room left tells "larger than the cap" from "exactly the cap"
            chunk = inflater.feed(raw, max_bytes - size + 1)
            if size + len(chunk) > max_bytes:
                chunks.append(chunk[: max_bytes - size])
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
        tail = inflater.finish(max_bytes - size + 1)
    except httpx.HTTPError as exc:
        raise ToolError(
            f"reading {response.request.headers.get('host')} failed: {type(exc).__name__}"
        ) from None
    if size + len(tail) > max_bytes:
        return b"".join([*chunks, tail[: max_bytes - size]]), True
    return b"".join([*chunks, tail]), False


class _Inflater:
    """Decodes a ``Content-Encoding`` body piece by piece, never producing more than asked for."""

    def __init__(self, encoding: str) -> None:
        name = encoding.strip().lower()
        self.name = name
        self._zlib: Any = None
        #: "deflate" is sometimes sent without its zlib header: the first piece tells
        self._may_be_raw = name == "deflate"
        if name in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif name == "deflate":
            self._zlib = zlib.decompressobj()
        elif name not in ("", "identity"):
            raise ToolError(f"the server sent an unsupported content encoding: {encoding[:40]!r}")

    def feed(self, data: bytes, room: int) -> bytes:
        """Up to ``room`` decoded bytes out of ``data`` (what does not fit is dropped: the caller
        stops at the cap anyway)."""
        if self._zlib is None:
            return data[:room]
        try:
            out = bytes(self._zlib.decompress(data, room))
        except zlib.error:
            if not self._may_be_raw:
                raise ToolError(f"the {self.name} body could not be decoded") from None
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            self._may_be_raw = False
            out = self.feed(data, room)
        self._may_be_raw = False
        return out

    def finish(self, room: int) -> bytes:
        if self._zlib is None:
            return b""
        try:
            return bytes(self._zlib.flush())[:room]
        except zlib.error:
            raise ToolError(f"the {self.name} body could not be decoded") from None


def render_page(page: FetchedPage, requested: str, max_chars: int) -> ToolResult:
    """The tool result: a short header, then the readable text (cut at ``max_chars`` with a note)."""
    ctype = page.content_type.split(";", 1)[0].strip().lower()
    text = _decode(page.body, page.charset)
    title = ""
    if ctype in ("text/html", "application/xhtml+xml") or (not ctype and _looks_like_html(text)):
        title, text = html_to_text(text)
    elif ctype and not any(marker in ctype for marker in _TEXT_TYPES):
        raise ToolError(f"{page.url} returned {ctype} content ({len(page.body)} bytes), which is not text")
    header = [f"URL: {page.url}"]
    if page.redirects:
        header.append(f"(redirected from {requested})")
    header.append(f"Status: {page.status} {page.reason}".rstrip())
    if ctype:
        header.append(f"Content-Type: {ctype}")
    if title:
        header.append(f"Title: {title}")
    notes = []
    if page.truncated:
        notes.append(
            f"[truncated: the response is larger than {len(page.body)} bytes; showing what was read]"
        )
    if len(text) > max_chars:
        notes.append(f"[truncated: showing the first {max_chars} of {len(text)} characters]")
        text = text[:max_chars]
    content = "\n".join(header) + "\n\n" + (text or "(empty body)")
    if notes:
        content += "\n\n" + "\n".join(notes)
    if page.status >= 400:
        return ToolResult(content=f"error: HTTP {page.status} {page.reason}\n{content}", ok=False)
    return ToolResult(content=content)


def _decode(body: bytes, charset: str) -> str:
    try:
        codec = codecs.lookup(charset).name if charset else "utf-8"
    except LookupError:
        codec = "utf-8"
    return body.decode(codec, errors="replace")


def _looks_like_html(text: str) -> bool:
    head = text[:512].lstrip().lower()
    return head.startswith(("<!doctype html", "<html")) or "<body" in head
