"""The wire side of the ``osis`` engine: each engine step as a JSON-RPC method and params, the
encoding of requests, and the reading of one response object (used by :mod:`store.osis.client`).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from store.engine import (
    ClaimStep,
    CountStep,
    CreateStep,
    DeleteStep,
    GetStep,
    ListStep,
    ReleaseStep,
    Step,
    UpdateStep,
)
from store.errors import InvalidInput
from store.models import Record, Scope
from store.osis.protocol import OsisProtocolError


class RemoteError(Exception):
    def __init__(self, code: int, message: str, data: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class Retryable(Exception):
    """A gateway status (502/503/504): the service is restarting or overloaded."""


def plan(scope: Scope, step: Step) -> tuple[str, dict[str, Any]]:
    """The JSON-RPC method and params of one step."""
    user = {"user_id": scope.user_id}
    match step:
        case GetStep(kind, sid):
            return f"{kind.rpc_name}.get", {**user, "sid": sid}
        case ListStep(kind, query):
            params: dict[str, Any] = {
                **user,
                "order": ("-" if query.descending else "") + query.order_by,
                "limit": query.limit,
            }
            if query.filters:
                params["filter"] = query.filters
            if query.cursor is not None:
                params["cursor"] = query.cursor
            if query.text is not None:
                params["text"] = query.text
            return f"{kind.rpc_name}.list", params
        case CountStep(kind, filters):
            return f"{kind.rpc_name}.count", {**user, "filter": filters} if filters else user
        case CreateStep(kind, fields, request_key):
            key = request_key or f"osis-client:{uuid.uuid4().hex}"
            return f"{kind.rpc_name}.set", {**user, "object": fields, "request_key": key}
        case UpdateStep(kind, sid, fields):
            return f"{kind.rpc_name}.set", {**user, "object": fields, "sid": sid}
        case DeleteStep(kind, sid):
            return f"{kind.rpc_name}.delete", {**user, "sid": sid}
        case ClaimStep(key, holder, ttl_ms):
            return "agentlease.claim", {**user, "key": key, "holder": holder, "ttl_ms": ttl_ms}
        case ReleaseStep(key, holder):
            return "agentlease.release", {**user, "key": key, "holder": holder}
    raise TypeError(f"not a batch step: {step!r}")


def encode(payload: Any) -> bytes:
    try:
        return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"a value is not JSON: {exc}") from None


def answer_of(answer: Any, where: str) -> Any:
    """The result of one JSON-RPC response object; its error raised as :class:`RemoteError`."""
    if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
        raise OsisProtocolError(f"OSIS store at {where} answered a malformed JSON-RPC response")
    err = answer.get("error")
    if err is not None:
        if not isinstance(err, dict):
            raise OsisProtocolError(f"OSIS store at {where} answered a malformed error")
        raise RemoteError(int(err.get("code", 0)), str(err.get("message", "")), err.get("data"))
    return answer["result"]


def record_of(value: Any) -> Record:
    if not isinstance(value, dict):
        raise OsisProtocolError("OSIS store answered a record that is not an object")
    return value
