"""What both HTTP adapters share: the pooled client, streaming POSTs, and the mapping of HTTP
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
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx2

from agent.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderQuotaError,
    ProviderRateLimited,
    ProviderUnavailable,
)
from agent.providers.base import Provider
from agent.providers.wire import one_write_transport
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
POOL_LIMITS = httpx2.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=60.0)
JSON_HEADERS = {"content-type": "application/json"}


def make_client(
    settings: LLMSettings, headers: Mapping[str, str], transport: httpx2.AsyncBaseTransport | None
) -> httpx2.AsyncClient:
    """One pooled client per provider, each request sent in one socket write
    (:mod:`agent.providers.wire`). The read timeout bounds every single wait for bytes (the headers
    included); the gap between stream events is also policed by the retry layer."""
    timeout = httpx2.Timeout(settings.request_timeout_s, connect=settings.connect_timeout_s)
    return httpx2.AsyncClient(
        base_url=settings.base_url.rstrip("/") + "/",
        headers={"user-agent": "hero-agent", **headers},
        timeout=timeout,
        transport=one_write_transport(POOL_LIMITS) if transport is None else transport,
        limits=POOL_LIMITS,
    )


@asynccontextmanager
async def post_stream(
    client: httpx2.AsyncClient, path: str | httpx2.URL, body: dict[str, Any] | bytes, secret: str
) -> AsyncIterator[httpx2.Response]:
    """POST ``body`` (an object, or its JSON already encoded) to ``path`` (relative to the client's
    base URL, or that already joined: :meth:`HttpProvider.url`) and hold the streaming response; HTTP
    errors and transport failures become ProviderErrors, also those raised while the caller reads the
    body inside the ``async with``."""
    try:
        sent = (
            client.stream("POST", path, content=body, headers=JSON_HEADERS)
            if isinstance(body, bytes)
            else client.stream("POST", path, json=body)
        )
        async with sent as resp:
            if resp.status_code >= 400:
                text = (await resp.aread()).decode("utf-8", "replace")
                raise error_from_response(resp.status_code, resp.headers, text, secret)
            yield resp
    except httpx2.UnsupportedProtocol:
        raise ProviderError("the LLM base_url is not an http(s) URL") from None
    except httpx2.TimeoutException:
        raise ProviderUnavailable("the LLM provider timed out", retryable=True) from None
    except httpx2.HTTPError as exc:
        # RemoteProtocolError (cut stream), ConnectError, ReadError, DecodingError...: no URL or
        # header in the text
        # the provider's address is for the operator's logs (``detail``), not for the chat user
        url = client.base_url
        origin = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
        raise ProviderUnavailable(
            f"connection to the LLM provider failed ({type(exc).__name__})",
            retryable=True,
            detail=f"base_url {origin}",
        ) from None


class HttpProvider(Provider):
    """A provider speaking to its API over one pooled :class:`httpx2.AsyncClient` (``transport`` is the
    test seam): the client's lifecycle, the ping and the model list are the same for both APIs; each
    API brings its headers and its ``stream``."""

    def __init__(
        self, settings: LLMSettings, headers: dict[str, str], transport: httpx2.AsyncBaseTransport | None
    ) -> None:
        self._secret = settings.api_key
        self._client = make_client(settings, headers, transport)
        self._urls: dict[str, httpx2.URL] = {}

    def url(self, path: str) -> httpx2.URL:
        """``path`` joined to the base URL once: httpx parses a str URL and merges it with the base on
        every request (~30 us of a turn); an absolute :class:`httpx2.URL` goes through as it is."""
        url = self._urls.get(path)
        if url is None:
            base = self._client.base_url  # as httpx merges a relative path: appended to the base
            url = self._urls[path] = base.copy_with(raw_path=base.raw_path + path.lstrip("/").encode())
        return url

    async def aclose(self) -> None:
        await self._client.aclose()

    async def ping(self) -> None:
        """Reachable and accepting the key: ``GET models`` (a server without that route still counts:
        only a refused key or a server error fails)."""
        try:
            resp = await self._client.get("models")
        except httpx2.HTTPError:
            raise ProviderUnavailable("the LLM provider cannot be reached", retryable=True) from None
        if resp.status_code in (401, 403) or resp.status_code >= 500:
            raise error_from_response(resp.status_code, resp.headers, resp.text, self._secret)

    async def list_models(self) -> list[str] | None:
        return await list_models(self._client, self._secret)


async def list_models(client: httpx2.AsyncClient, secret: str) -> list[str] | None:
    """``GET models`` of either API (both answer ``{"data": [{"id": ...}, ...]}``): the model ids, or
    None when the server has no such route or answers another shape (local servers vary). Raises
    ProviderUnavailable when it cannot be reached and the mapped error for 401/403/429/5xx."""
    try:
        resp = await client.get("models", params={"limit": 1000})
    except httpx2.UnsupportedProtocol:
        raise ProviderError("the LLM base_url is not an http(s) URL") from None
    except httpx2.HTTPError as exc:
        url = client.base_url
        origin = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
        raise ProviderUnavailable(
            f"the LLM provider at {origin} cannot be reached ({type(exc).__name__})", retryable=True
        ) from None
    if resp.status_code in (401, 403, 429) or resp.status_code >= 500:
        raise error_from_response(resp.status_code, resp.headers, resp.text, secret)
    if resp.status_code != 200:
        return None
    try:
        data = resp.json().get("data")
    except (ValueError, AttributeError):
        return None
    if not isinstance(data, list):
        return None
    return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]


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
