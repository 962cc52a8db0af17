"""The ``osis`` engine: the engine seam over OSIS JSON-RPC 2.0 on HTTP (SPEC 7.2, 7.3).

One pooled :class:`httpx.AsyncClient` per engine; every call carries ``X-Hero-Context`` (the scope's
context) and the user as the ``user_id`` param. ``open()`` checks ``rpc.discover`` and names any method
the service lacks. Every call this engine makes is safe to repeat, so each is retried (``store.retries``
times, on connection errors, timeouts and 502/503/504, never after an answer): reads, updates, deletes,
lease claims by the same holder and restores are idempotent, and every create carries a ``request_key``
(the caller's, or one generated per call) so a create whose answer was lost is repeated without
doubling. Nothing is
sticky: after an outage the next call simply reconnects. The secret never appears in errors or logs.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import httpx
import structlog

from config import StoreSettings
from store.engine import Engine, ListQuery, Page
from store.errors import InvalidInput, NotFound, StoreError, StoreUnavailable
from store.models import JSON, Kind, Record, Scope
from store.osis_protocol import (
    CONTEXT_HEADER,
    DUMP_PAGE,
    MAX_BODY_BYTES,
    REQUIRED_METHODS,
    RESTORE_BATCH,
    OsisAuthError,
    OsisProtocolError,
    endpoint_for,
    methods_in,
    store_error_for,
)

log = structlog.get_logger()
_RETRY_STATUS = frozenset({502, 503, 504})
_BACKOFF_S = (0.05, 0.2, 0.5, 1.0)
#: restore_batch chunks stay well under the server's request size limit
_CHUNK_BYTES = MAX_BODY_BYTES // 2


class _RemoteError(Exception):
    def __init__(self, code: int, message: str, data: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def redacted(url: str) -> str:
    """``url`` without user info or query (where credentials could hide)."""
    try:
        u = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid url>"
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.host}{port}{u.path}"


class OsisEngine(Engine):
    """A remote OSIS service as a store engine. Selected by ``store.engine = "osis"``."""

    name = "osis"

    def __init__(self, settings: StoreSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not settings.url:
            raise StoreError("store.url must name the OSIS service when store.engine is 'osis'")
        self.endpoint = endpoint_for(settings.url)
        self.where = redacted(self.endpoint)
        self._secret = settings.secret
        self._timeout = httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 5.0))
        self._retries = max(0, settings.retries)
        self._default_context = settings.context or "default"
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._checked = False
        self._next_id = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self._secret}"} if self._secret else {}
            self._client = httpx.AsyncClient(
                transport=self._transport,
                headers=headers,
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            )
        try:
            await self._check_methods()
        except BaseException:
            # a failed open leaves nothing behind: the caller's __aexit__ will not run
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise

    async def aclose(self) -> None:
        client, self._client = self._client, None
        self._checked = False
        if client is not None:
            await client.aclose()

    async def _check_methods(self) -> None:
        doc = await self._call("rpc.discover", {}, self._default_context, check=False)
        missing = sorted(REQUIRED_METHODS - methods_in(doc) - {"rpc.discover"})
        if missing:
            raise OsisProtocolError(
                f"OSIS store at {self.where} lacks {len(missing)} method(s) hero-agent needs: "
                + ", ".join(missing)
            )
        self._checked = True

    async def ping(self) -> None:
        await self._call("store.ping", {}, self._default_context)

    # -- transport ----------------------------------------------------------------------------

    async def _call(self, method: str, params: dict[str, Any], context: str, *, check: bool = True) -> Any:
        """One call. Every call this engine makes is safe to repeat (see the module docstring), so
        each is retried on connection errors, timeouts and gateway statuses -- never after an answer."""
        if self._client is None:
            raise StoreUnavailable("the osis engine is closed")
        if check and not self._checked:
            await self._check_methods()
        self._next_id += 1
        try:
            body = json.dumps(
                {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params},
                ensure_ascii=False,
                allow_nan=False,
                separators=(",", ":"),
            ).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"a value is not JSON: {exc}") from None
        attempts = 1 + self._retries
        for attempt in range(attempts):
            try:
                return await self._post(body, context)
            except _RemoteError as exc:
                raise store_error_for(exc.code, exc.message, exc.data) from None
            except (httpx.TransportError, _Retryable) as exc:
                if attempt + 1 >= attempts:
                    log.warning("osis.unreachable", method=method, url=self.where, error=type(exc).__name__)
                    raise StoreUnavailable(f"OSIS store unreachable at {self.where}") from None
                await anyio.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
        raise AssertionError("unreachable")

    async def _post(self, body: bytes, context: str) -> Any:
        assert self._client is not None
        headers = {CONTEXT_HEADER: context, "Content-Type": "application/json"}
        resp = await self._client.post(self.endpoint, content=body, headers=headers)
        if resp.status_code in _RETRY_STATUS:
            raise _Retryable
        if resp.status_code == 413:
            raise InvalidInput(f"request too large for the OSIS store at {self.where}")
        if resp.status_code == 401:
            raise OsisAuthError(f"OSIS store at {self.where} refused the credentials (check store.secret)")
        try:
            answer = resp.json()
        except ValueError:
            raise OsisProtocolError(
                f"OSIS store at {self.where} answered HTTP {resp.status_code} without JSON-RPC"
            ) from None
        if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
            raise OsisProtocolError(f"OSIS store at {self.where} answered a malformed JSON-RPC response")
        err = answer.get("error")
        if err is not None:
            if not isinstance(err, dict):
                raise OsisProtocolError(f"OSIS store at {self.where} answered a malformed error")
            raise _RemoteError(int(err.get("code", 0)), str(err.get("message", "")), err.get("data"))
        return answer["result"]

    # -- the engine seam ----------------------------------------------------------------------

    async def get(self, kind: Kind, scope: Scope, sid: str) -> Record | None:
        try:
            rec = await self._call(
                f"{kind.rpc_name}.get", {"user_id": scope.user_id, "sid": sid}, scope.context
            )
        except StoreError as exc:
            if _is_not_found(exc):
                return None
            raise
        return _record(rec)

    async def create(
        self, kind: Kind, scope: Scope, fields: Record, *, request_key: str | None = None
    ) -> Record:
        key = request_key or f"osis-client:{uuid.uuid4().hex}"
        params = {"user_id": scope.user_id, "object": fields, "request_key": key}
        result = await self._call(f"{kind.rpc_name}.set", params, scope.context)
        return await self._set_result(kind, scope, result)

    async def update(self, kind: Kind, scope: Scope, sid: str, fields: Record) -> Record | None:
        params = {"user_id": scope.user_id, "object": fields, "sid": sid}
        try:
            result = await self._call(f"{kind.rpc_name}.set", params, scope.context)
        except StoreError as exc:
            if _is_not_found(exc):
                return None
            raise
        return await self._set_result(kind, scope, result)

    async def _set_result(self, kind: Kind, scope: Scope, result: Any) -> Record:
        """Our server answers ``{"sid", "object"}``; plain OSIS answers the sid (then fetch it)."""
        if isinstance(result, dict) and isinstance(result.get("object"), dict):
            return _record(result["object"])
        sid = result.get("sid") if isinstance(result, dict) else result
        if not isinstance(sid, str):
            raise OsisProtocolError(f"OSIS store at {self.where} answered set without a sid")
        rec = await self.get(kind, scope, sid)
        if rec is None:
            raise StoreUnavailable(f"OSIS store at {self.where} lost {kind.value} {sid!r} right after set")
        return rec

    async def delete(self, kind: Kind, scope: Scope, sid: str) -> bool:
        params = {"user_id": scope.user_id, "sid": sid}
        return bool(await self._call(f"{kind.rpc_name}.delete", params, scope.context))

    async def list(self, kind: Kind, scope: Scope, query: ListQuery) -> Page[Record]:
        params: dict[str, Any] = {
            "user_id": scope.user_id,
            "order": ("-" if query.descending else "") + query.order_by,
            "limit": query.limit,
        }
        if query.filters:
            params["filter"] = query.filters
        if query.cursor is not None:
            params["cursor"] = query.cursor
        if query.text is not None:
            params["text"] = query.text
        result = await self._call(f"{kind.rpc_name}.list", params, scope.context)
        if not isinstance(result, dict) or not isinstance(result.get("items"), list):
            raise OsisProtocolError(f"OSIS store at {self.where} answered list without items")
        return Page([_record(r) for r in result["items"]], result.get("next_cursor"))

    async def count(self, kind: Kind, scope: Scope, filters: dict[str, JSON] | None = None) -> int:
        params: dict[str, Any] = {"user_id": scope.user_id}
        if filters:
            params["filter"] = filters
        return int(await self._call(f"{kind.rpc_name}.count", params, scope.context))

    async def claim(self, scope: Scope, key: str, holder: str, ttl_ms: int | None) -> bool:
        params = {"user_id": scope.user_id, "key": key, "holder": holder, "ttl_ms": ttl_ms}
        return bool(await self._call("agentlease.claim", params, scope.context))

    async def release(self, scope: Scope, key: str, holder: str) -> None:
        params = {"user_id": scope.user_id, "key": key, "holder": holder}
        await self._call("agentlease.release", params, scope.context)

    async def contexts(self) -> builtins.list[str]:
        result = await self._call("store.contexts", {}, self._default_context)
        return [str(c) for c in result]

    async def dump(self, context: str) -> AsyncIterator[tuple[Kind, Record]]:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": DUMP_PAGE}
            if cursor:
                params["cursor"] = cursor
            page = await self._call("store.dump", params, context)
            for item in page["items"]:
                yield Kind(item["kind"]), _record(item["record"])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def restore_batch(self, items: Sequence[tuple[Kind, Record]]) -> int:
        """Chunks of one context each, every chunk one transaction on the server (not the whole batch)."""
        written = 0
        chunk: builtins.list[dict[str, Any]] = []
        size = 0
        context = ""
        for kind, record in items:
            ctx = record.get("context")
            if not isinstance(ctx, str):
                raise InvalidInput("a restored record needs its context")
            line = len(json.dumps(record))
            if chunk and (ctx != context or len(chunk) >= RESTORE_BATCH or size + line > _CHUNK_BYTES):
                written += await self._restore_chunk(chunk, context)
                chunk, size = [], 0
            context = ctx
            chunk.append({"kind": kind.value, "record": record})
            size += line
        if chunk:
            written += await self._restore_chunk(chunk, context)
        return written

    async def _restore_chunk(self, chunk: builtins.list[dict[str, Any]], context: str) -> int:
        return int(await self._call("store.restore_batch", {"items": chunk}, context))

    async def restore(self, kind: Kind, record: Record) -> bool:
        context = record.get("context")
        if not isinstance(context, str):
            raise InvalidInput("a restored record needs its context")
        return bool(await self._call(f"{kind.rpc_name}.restore", {"record": record}, context))


class _Retryable(Exception):
    """A gateway status (502/503/504): the service is restarting or overloaded."""


def _is_not_found(exc: StoreError) -> bool:
    return isinstance(exc, NotFound)


def _record(value: Any) -> Record:
    if not isinstance(value, dict):
        raise OsisProtocolError("OSIS store answered a record that is not an object")
    return value
