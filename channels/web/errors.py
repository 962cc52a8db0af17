"""JSON errors of the web channel and the request-body reader that enforces the size limit.

Every error answer is ``{"error": {"code": ..., "message": ...}}`` with the matching HTTP status. Under
``/v1/`` (the OpenAI-compatible API) the same object also carries ``type`` and ``param`` so that
OpenAI clients raise their usual exceptions. Messages are one user-safe line: never a traceback, never
a secret.

Every error is rendered from its own description (``code`` and ``user_message``, see
:mod:`config.errors`): ``ApiError`` for what the web itself refuses, and the errors of every layer
(store, agent, media, pairing) raised by a route. The HTTP status follows the code (:data:`STATUS`);
an error that is not user-safe is a 500 with the generic sentence, logged.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from config.errors import HeroError, describe_error

log = structlog.get_logger("hero.web")

#: OpenAI's error ``type`` for each status we answer under /v1/
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    502: "api_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(HeroError):
    """An error answer: HTTP ``status``, machine-readable ``code``, one user-safe ``message`` line."""

    user_safe = True

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        #: the request field at fault (OpenAI's ``error.param``)
        self.param = param


#: the HTTP status of an error code (of any layer); a code not listed refuses the request: 400
STATUS = {
    # the store
    "message_too_large": 413,
    "not_found": 404,
    "conflict": 409,
    "busy": 409,
    "lease_lost": 409,
    "unsupported": 501,
    "store_unavailable": 503,
    "store_unauthorized": 503,
    "store_protocol": 502,
    "store_failed": 500,
    # the agent and its turns
    "provider_error": 502,
    "cancelled": 503,
    "unavailable": 503,
    "deadline": 504,
    "agent_error": 500,
    "internal": 500,
    "vision_unsupported": 400,
    # the OpenAI-compatible API (/v1): its parameters and client tools
    "invalid_parameter": 400,
    "unsupported_parameter": 400,
    "invalid_tools": 400,
    "tool_name_conflict": 400,
    "model_not_found": 404,
    # media
    "too_large": 413,
    "transcription_unavailable": 503,
    "fetch_failed": 502,
    "transcription_failed": 502,
    "speech_failed": 502,
    # pairing
    "pairing_not_found": 404,
    "pairing_config": 409,
}


def status_for(code: str) -> int:
    return STATUS.get(code, 400)


def error_body(
    status: int, code: str, message: str, *, openai: bool = False, param: str | None = None
) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if openai:
        err["type"] = _OPENAI_TYPES.get(status, "api_error")
        err["param"] = param
    return {"error": err}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    openai: bool = False,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    body = error_body(status, code, message, openai=openai, param=param)
    return JSONResponse(body, status_code=status, headers=headers)


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


async def handle_error(request: Request, exc: Exception) -> Response:
    """Any error of the trees: its status, its code and its one sentence (a 500 is logged)."""
    assert isinstance(exc, HeroError)
    if isinstance(exc, ApiError):
        return error_response(
            exc.status,
            exc.code,
            exc.message,
            openai=_is_openai(request),
            headers=exc.headers,
            param=exc.param,
        )
    code, message = describe_error(exc)
    status = status_for(code) if exc.user_safe else 500
    if status >= 500:
        log.error("web.error", error_type=type(exc).__name__, code=code, path=request.url.path)
    return error_response(status, code, message, openai=_is_openai(request))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = "no such route" if exc.status_code == 404 else str(exc.detail)
    return error_response(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        message,
        openai=_is_openai(request),
        headers=dict(exc.headers or {}),
    )


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("web.unhandled_error", path=request.url.path, error_type=type(exc).__name__)
    code, message = describe_error(exc)
    return error_response(500, code, message, openai=_is_openai(request))


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """The whole body, or 413 as soon as it (declared or actual) exceeds ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise _too_large(max_bytes)
        except ValueError:
            raise ApiError(400, "invalid_request", "invalid Content-Length header") from None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    return bytes(body)


async def read_json_object(request: Request, max_bytes: int, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, read with a hard size cap.

    413 when the body (declared or actual) exceeds ``max_bytes``; 400 for anything that is not a JSON
    object. Nothing is stored before this returns, so a rejected body changes nothing.
    """
    body = await read_limited(request, max_bytes)
    if not body.strip():
        if allow_empty:
            return {}
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return data


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is larger than {max_bytes} bytes")
