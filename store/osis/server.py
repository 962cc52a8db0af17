"""The OSIS app: any :class:`~store.engine.Engine` over OSIS JSON-RPC 2.0 on HTTP (SPEC 7.3).

The command that serves it (binding, signals, settings) is ``hero-agent osis serve``, in
``channels/subcommands/osis.py``; this module is the app only.

Routes: ``POST /hero_osis_ai/rpc`` (and ``POST /rpc``), ``GET /openrpc.json``. Transport rules:

* auth: when a secret is set, every request needs ``Authorization: Bearer <secret>`` (constant-time
  compare; HTTP 401 otherwise); the serve command refuses a non-loopback bind without a secret;
* the context comes from ``X-Hero-Context`` (missing or invalid: an error for that call, never a
  default); ``rpc.discover`` alone works without it;
* bodies over ``max_body`` bytes get HTTP 413 with a -32600 error; batches of up to ``MAX_BATCH`` calls
  are answered in order (notifications produce no entry; all-notification requests get 204).
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from store.engine import Engine
from store.errors import InvalidInput
from store.models import validate_stored_context
from store.osis.dispatch import Dispatcher, RpcError
from store.osis.protocol import (
    CONTEXT_HEADER,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    MAX_BATCH,
    MAX_BODY_BYTES,
    PARSE_ERROR,
    UNAUTHORIZED,
    openrpc_document,
)

log = structlog.get_logger()
OSIS_RPC_PATH = "/hero_osis_ai/rpc"


def _error(code: int, message: str, id_: Any = None, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": id_, "error": err}


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, (str, int)) and not isinstance(value, bool))


class _RpcEndpoint:
    def __init__(self, dispatcher: Dispatcher, secret: str, max_body: int) -> None:
        self.dispatcher = dispatcher
        self.secret = secret.encode()
        self.max_body = max_body

    def authorized(self, request: Request) -> bool:
        if not self.secret:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.secret)

    async def rpc(self, request: Request) -> Response:
        if not self.authorized(request):
            return JSONResponse(_error(UNAUTHORIZED, "missing or wrong bearer secret"), status_code=401)
        body = await self._read_body(request)
        if body is None:
            return JSONResponse(
                _error(INVALID_REQUEST, f"request body larger than {self.max_body} bytes"), status_code=413
            )
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
            return JSONResponse(_error(PARSE_ERROR, "parse error: the body is not valid JSON"))
        context = request.headers.get(CONTEXT_HEADER)
        if isinstance(payload, list):
            if not payload:
                return JSONResponse(_error(INVALID_REQUEST, "empty batch"))
            if len(payload) > MAX_BATCH:
                return JSONResponse(_error(INVALID_REQUEST, f"batch larger than {MAX_BATCH} calls"))
            answers = [a for a in [await self._one(item, context) for item in payload] if a is not None]
            return JSONResponse(answers) if answers else Response(status_code=204)
        answer = await self._one(payload, context)
        return JSONResponse(answer) if answer is not None else Response(status_code=204)

    async def _read_body(self, request: Request) -> bytes | None:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _one(self, call: Any, context: str | None) -> dict[str, Any] | None:
        """The answer to one call, or None for a valid notification."""
        if not isinstance(call, dict):
            return _error(INVALID_REQUEST, "invalid request: not a JSON-RPC call object")
        id_ = call.get("id")
        if not _valid_id(id_):
            return _error(INVALID_REQUEST, "invalid request: id must be a string, an integer or null")
        method = call.get("method")
        if call.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return _error(INVALID_REQUEST, "invalid request: needs jsonrpc '2.0' and a method name", id_)
        notification = "id" not in call
        started = time.perf_counter()
        try:
            ctx = self._context(context, method)
            result = await self.dispatcher.call(method, call.get("params"), ctx)
            answer: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "result": result}
        except RpcError as exc:
            answer = _error(exc.code, exc.message, id_, exc.data)
        except Exception:
            log.exception("osis.internal_error", method=method)
            answer = _error(INTERNAL_ERROR, "internal error", id_)
        log.debug(
            "osis.call",
            method=method,
            ms=round((time.perf_counter() - started) * 1000, 3),
            error=answer.get("error", {}).get("code"),
        )
        return None if notification else answer

    @staticmethod
    def _context(value: str | None, method: str) -> str:
        if method == "rpc.discover":
            return value or ""
        if not value:
            raise RpcError(INVALID_REQUEST, f"missing {CONTEXT_HEADER} header")
        try:
            return validate_stored_context(value)
        except InvalidInput as exc:
            raise RpcError(INVALID_REQUEST, f"invalid {CONTEXT_HEADER} header: {exc}") from None

    async def openrpc(self, request: Request) -> Response:
        if not self.authorized(request):
            return JSONResponse(_error(UNAUTHORIZED, "missing or wrong bearer secret"), status_code=401)
        return JSONResponse(openrpc_document())


def build_osis_app(engine: Engine, *, secret: str = "", max_body: int = MAX_BODY_BYTES) -> Starlette:
    """The ASGI app serving ``engine``. The caller opens and closes the engine."""
    dispatcher = Dispatcher(engine)
    endpoint = _RpcEndpoint(dispatcher, secret, max_body)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with dispatcher:
            yield

    return Starlette(
        routes=[
            Route(OSIS_RPC_PATH, endpoint.rpc, methods=["POST"]),
            Route("/rpc", endpoint.rpc, methods=["POST"]),
            Route("/openrpc.json", endpoint.openrpc, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
