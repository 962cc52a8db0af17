"""What both HTTP adapters share: the pooled client (:mod:`agent.providers.h1`, or httpx2 behind a
proxy), streaming POSTs, and the mapping of HTTP
statuses, in-stream error objects and transport failures onto :mod:`agent.errors`.

::

    401, 403                                   -> ProviderAuthError      never retried
    402; 429/400 saying quota, billing, credit -> ProviderQuotaError     never retried
    429                                        -> ProviderRateLimited    retried (Retry-After honoured)
    408, 409, 425, 5xx, 529, timeouts,
    connection errors, dropped streams         -> ProviderUnavailable    retried
    404 naming the model                       -> ProviderModelNotFound  not retried, falls back
    other 4xx                                  -> ProviderError          not retried

Messages are one user-safe line. They never carry the API key: server text is scrubbed of it and of
key-shaped tokens, and httpx exceptions (which hold URLs and headers) are dropped with ``from None``.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any, Protocol

import httpx2

from agent.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderQuotaError,
    ProviderRateLimited,
    ProviderUnavailable,
)
from agent.providers import h1
from agent.providers.base import Provider
from config.settings import LLMSettings


class ProviderModelNotFound(ProviderError):
    """The server does not know the requested model (404): the next fallback model may work."""


_QUOTA_MARKERS = (
    "insufficient_quota",
    "billing",
    "exceeded your current quota",
    "credit balance",
    "payment required",
)
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 500, 502, 503, 504, 520, 522, 524, 529})
_KEY_SHAPED = re.compile(r"\b(sk|pk|key|rk)-[A-Za-z0-9_\-]{8,}")
_MAX_DETAIL = 200


#: connections kept open between turns (keep-alive), and how many may run at once: a burst of turns
#: (200 web chats at once) should not queue for a connection in front of a server that takes them
MAX_CONNECTIONS = 256
MAX_KEEPALIVE = 64
KEEPALIVE_EXPIRY_S = 60.0
JSON_HEADERS = {"content-type": "application/json"}


class Answer(Protocol):
    """An HTTP answer whose body is read as it comes (:class:`h1.Response`, or httpx2's)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...


def env_proxy(url: httpx2.URL) -> bool:
    """The environment names a proxy for ``url`` (``HTTPS_PROXY``, ``ALL_PROXY``... not excluded by
    ``NO_PROXY``), as httpx reads them."""
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(url.host)


class Direct:
    """Requests over the providers' own HTTP/1.1 pool (:mod:`agent.providers.h1`): the default."""

    def __init__(self, base: httpx2.URL, headers: Mapping[str, str], settings: LLMSettings) -> None:
        self.origin = h1.Origin.of(base.scheme, base.host, base.port)
        self.base_path = base.raw_path.decode("ascii")
        self._headers = [*headers.items(), ("accept", "*/*"), ("accept-encoding", "gzip, deflate")]
        self._pool = h1.Pool(
            self.origin,
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.request_timeout_s,
            ssl_context=httpx2.create_ssl_context,
            max_connections=MAX_CONNECTIONS,
            max_keepalive=MAX_KEEPALIVE,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        )
        #: each request's line and headers, encoded once per (method, path)
        self._heads: dict[tuple[str, str], bytes] = {}

    def head(self, method: str, path: str) -> bytes:
        key = (method, path)
        head = self._heads.get(key)
        if head is None:
            extra = JSON_HEADERS.items() if method == "POST" else ()
            target = self.base_path + path.lstrip("/")
            head = self._heads[key] = h1.request_head(method, target, self.origin, [*self._headers, *extra])
        return head

    @asynccontextmanager
    async def send(self, method: str, path: str, body: bytes | None) -> AsyncIterator[Answer]:
        async with await self._pool.request(self.head(method, path), body) as resp:
            yield resp

    async def aclose(self) -> None:
        await self._pool.aclose()


class ViaProxy:
    """Requests through httpx2, which speaks to the proxy the environment names (see :func:`env_proxy`)."""

    def __init__(self, base: httpx2.URL, headers: Mapping[str, str], settings: LLMSettings) -> None:
        self._client = httpx2.AsyncClient(
            base_url=base,
            headers=dict(headers),
            timeout=httpx2.Timeout(settings.request_timeout_s, connect=settings.connect_timeout_s),
            limits=httpx2.Limits(
                max_connections=MAX_CONNECTIONS,
                max_keepalive_connections=MAX_KEEPALIVE,
                keepalive_expiry=KEEPALIVE_EXPIRY_S,
            ),
        )

    @asynccontextmanager
    async def send(self, method: str, path: str, body: bytes | None) -> AsyncIterator[Answer]:
        headers = JSON_HEADERS if body is not None else None
        async with self._client.stream(method, path, content=body, headers=headers) as resp:
            yield resp

    async def aclose(self) -> None:
        await self._client.aclose()


#: transport failures of either client, and which of them are timeouts
_UNSUPPORTED = (httpx2.UnsupportedProtocol, h1.UnsupportedProtocol)
_TIMEOUTS = (httpx2.TimeoutException, *h1.TIMEOUTS)
_FAILURES = (httpx2.HTTPError, h1.HTTPError)


class HttpProvider(Provider):
    """A provider speaking to its API over one pooled client: :class:`Direct` (our HTTP/1.1 pool), or
    :class:`ViaProxy` when the environment names a proxy for the base URL. The client's lifecycle,
    the ping and the model list are the same for both APIs; each API brings its headers and its
    ``stream``."""

    def __init__(self, settings: LLMSettings, headers: dict[str, str]) -> None:
        self._secret = settings.api_key
        base = httpx2.URL(settings.base_url.rstrip("/") + "/")
        self._origin = f"{base.scheme}://{base.host}" + (f":{base.port}" if base.port else "")
        if base.scheme not in ("http", "https"):
            self._http: Direct | ViaProxy | None = None  # every request fails with a clear error
            return
        all_headers = {"user-agent": "hero-agent", **headers}
        self._http = (
            ViaProxy(base, all_headers, settings) if env_proxy(base) else Direct(base, all_headers, settings)
        )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    @asynccontextmanager
    async def post_stream(self, path: str, body: dict[str, Any] | bytes) -> AsyncIterator[Answer]:
        """POST ``body`` (an object, or its JSON already encoded) to ``path`` (relative to the base URL)
        and hold the streaming answer; HTTP errors and transport failures become ProviderErrors, also
        those raised while the caller reads the body inside the ``async with``."""
        data = body if isinstance(body, bytes) else encode_json(body)
        async with self._exchange("POST", path, data) as resp:
            if resp.status_code >= 400:
                text = (await resp.aread()).decode("utf-8", "replace")
                raise error_from_response(resp.status_code, resp.headers, text, self._secret)
            yield resp

    @asynccontextmanager
    async def _exchange(self, method: str, path: str, body: bytes | None) -> AsyncIterator[Answer]:
        try:
            if self._http is None:
                raise h1.UnsupportedProtocol("not an http(s) URL")
            async with self._http.send(method, path, body) as resp:
                yield resp
        except _UNSUPPORTED:
            raise ProviderError("the LLM base_url is not an http(s) URL") from None
        except _TIMEOUTS:
            raise ProviderUnavailable("the LLM provider timed out", retryable=True) from None
        except _FAILURES as exc:
            # a cut stream, a refused connection...: no URL or header in the text; the provider's
            # address is for the operator's logs (``detail``), not for the chat user
            raise ProviderUnavailable(
                f"connection to the LLM provider failed ({type(exc).__name__})",
                retryable=True,
                detail=f"base_url {self._origin}",
                failure=type(exc).__name__,
            ) from None

    async def _get(self, path: str) -> tuple[int, Mapping[str, str], str]:
        async with self._exchange("GET", path, None) as resp:
            return resp.status_code, resp.headers, (await resp.aread()).decode("utf-8", "replace")

    async def ping(self) -> None:
        """Reachable and accepting the key: ``GET models`` (a server without that route still counts:
        only a refused key or a server error fails)."""
        try:
            status, headers, text = await self._get("models")
        except ProviderUnavailable:
            raise ProviderUnavailable("the LLM provider cannot be reached", retryable=True) from None
        if status in (401, 403) or status >= 500:
            raise error_from_response(status, headers, text, self._secret)

    async def list_models(self) -> list[str] | None:
        """``GET models`` of either API (both answer ``{"data": [{"id": ...}, ...]}``): the model ids,
        or None when the server has no such route or answers another shape (local servers vary).
        Raises ProviderUnavailable when it cannot be reached and the mapped error for
        401/403/429/5xx."""
        try:
            status, headers, text = await self._get("models?limit=1000")
        except ProviderUnavailable as exc:
            why = f" ({exc.failure})" if exc.failure else ""
            raise ProviderUnavailable(
                f"the LLM provider at {self._origin} cannot be reached{why}", retryable=True
            ) from None
        if status in (401, 403, 429) or status >= 500:
            raise error_from_response(status, headers, text, self._secret)
        if status != 200:
            return None
        try:
            data = json.loads(text).get("data")
        except (ValueError, AttributeError):
            return None
        if not isinstance(data, list):
            return None
        return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]


def encode_json(body: dict[str, Any]) -> bytes:
    """A request body's JSON, compact and UTF-8 (as httpx encoded ``json=``)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def scrub(text: str, secret: str) -> str:
    """``text`` without the secret or anything key-shaped, on one short line."""
    if secret:
        text = text.replace(secret, "[redacted]")
    text = _KEY_SHAPED.sub("[redacted]", text)
    text = " ".join(text.split())
    return text[:_MAX_DETAIL] + ("..." if len(text) > _MAX_DETAIL else "")


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_response(status: int, headers: Mapping[str, str], text: str, secret: str) -> ProviderError:
    """Map an HTTP error answer (any API's JSON error shape, or plain text) to a ProviderError."""
    payload: Any = None
    with suppress(ValueError):
        payload = json.loads(text)
    err = payload.get("error") if isinstance(payload, dict) else None
    detail = _detail(err if isinstance(err, dict) else None, text, secret)
    return _classify(status, detail, _markers(err), parse_retry_after(headers))


def error_from_payload(err: Any, secret: str) -> ProviderError:
    """Map an error object found inside a 200 stream (OpenAI ``{"error": ...}``, Anthropic ``error``)."""
    err = err if isinstance(err, dict) else {"message": str(err)}
    status = next((_as_status(v) for v in (err.get("code"), err.get("status")) if _as_status(v)), None)
    markers = _markers(err)
    if status is None:
        status = _status_from_markers(markers)
    detail = _detail(err, "", secret)
    return _classify(status, f"error in stream: {detail}", markers, None)


def _as_status(value: Any) -> int | None:
    """An HTTP status from an error's ``code``/``status`` (servers send 502 or "502")."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and 100 <= value <= 599 else None


def _detail(err: dict[str, Any] | None, text: str, secret: str) -> str:
    if err is not None:
        text = str(err.get("message") or err.get("type") or err.get("code") or "")
    return scrub(text, secret) or "no details"


def _markers(err: Any) -> str:
    if not isinstance(err, dict):
        return ""
    return " ".join(str(err.get(k) or "") for k in ("type", "code", "message")).lower()


def _status_from_markers(markers: str) -> int | None:
    if "rate_limit" in markers or "rate limit" in markers:
        return 429
    if any(m in markers for m in ("overloaded", "server_error", "api_error", "unavailable", "timeout")):
        return 503
    if "authentication" in markers or "invalid_api_key" in markers or "permission" in markers:
        return 401
    return None


def _classify(status: int | None, detail: str, markers: str, retry_after: float | None) -> ProviderError:
    code = f" (HTTP {status})" if status else ""
    if status == 402 or any(m in markers for m in _QUOTA_MARKERS):
        return ProviderQuotaError(
            f"the LLM provider's quota or billing limit is exhausted{code}", status=status
        )
    if status in (401, 403):
        # The server's own text may quote the key (OpenAI does, masked): leave it out entirely.
        return ProviderAuthError(f"the LLM provider rejected the API key{code}", status=status)
    if status == 429:
        return ProviderRateLimited(
            f"the LLM provider is rate limiting{code}: {detail}",
            status=status,
            retryable=True,
            retry_after=retry_after,
        )
    if status is not None and (status in _RETRYABLE_STATUSES or status >= 500):
        return ProviderUnavailable(
            f"the LLM provider is unavailable{code}: {detail}",
            status=status,
            retryable=True,
            retry_after=retry_after,
        )
    if status == 404 and "model" in markers + detail.lower():
        return ProviderModelNotFound(
            f"the LLM provider does not know this model{code}: {detail}", status=status
        )
    return ProviderError(f"the LLM provider refused the request{code}: {detail}", status=status)
