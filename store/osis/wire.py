"""The wire side of the ``osis`` engine: each engine step as a JSON-RPC method and params, the
encoding of requests, and the reading of one response object (used by :mod:`store.osis.client`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, Final

from store.engine import (
    ClaimStep,
    CountStep,
    CreateStep,
    DeleteStep,
    GetStep,
    ListStep,
    MarkCutStep,
    Page,
    ReleaseStep,
    Step,
    UpdateStep,
    check_handlers,
    row_of,
)
from store.errors import InvalidInput
from store.leases import Claimed
from store.models import Kind, Record, Scope
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
    """The JSON-RPC method (from the step table) and params of one step."""
    method = row_of(step).method
    kind = getattr(step, "kind", None)
    if isinstance(kind, Kind):
        method = method.format(object=kind.rpc_name)
    return method, {"user_id": scope.user_id, **PARAMS[type(step)](step)}


def _list_params(step: ListStep) -> dict[str, Any]:
    query = step.query
    order = ("-" if query.descending else "") + query.order_by
    params: dict[str, Any] = {"order": order, "limit": query.limit}
    if query.filters:
        params["filter"] = query.filters
    if query.cursor is not None:
        params["cursor"] = query.cursor
    if query.text is not None:
        params["text"] = query.text
    return params


def _create_params(step: CreateStep) -> dict[str, Any]:
    # every create carries a request key, so a create whose answer was lost can be repeated
    return {"object": step.fields, "request_key": step.request_key or f"osis-client:{uuid.uuid4().hex}"}


def _claim_params(step: ClaimStep) -> dict[str, Any]:
    # the owner param (null when unknown) also asks for the claim's outcome by name
    params: dict[str, Any] = {"key": step.key, "holder": step.holder, "ttl_ms": step.ttl_ms}
    params["owner"] = step.owner.to_json() if step.owner is not None else None
    if step.replace is not None:
        params["replace"] = step.replace
    return params


def _mark_cut_params(step: MarkCutStep) -> dict[str, Any]:
    params: dict[str, Any] = {"conversation_id": step.conversation_id}
    if step.request_key is not None:
        params["request_key"] = step.request_key
    return params


#: this engine's column of the step table: each step's params (besides ``user_id``)
PARAMS: Final[dict[type[Step], Callable[[Any], dict[str, Any]]]] = {
    GetStep: lambda step: {"sid": step.sid},
    ListStep: _list_params,
    CountStep: lambda step: {"filter": step.filters} if step.filters else {},
    CreateStep: _create_params,
    UpdateStep: lambda step: {"object": step.fields, "sid": step.sid},
    DeleteStep: lambda step: {"sid": step.sid},
    ClaimStep: _claim_params,
    ReleaseStep: lambda step: {"key": step.key, "holder": step.holder},
    MarkCutStep: _mark_cut_params,
}
check_handlers(PARAMS, "the osis wire mapping (params)")


def record_of(value: Any) -> Record:
    if not isinstance(value, dict):
        raise OsisProtocolError("OSIS store answered a record that is not an object")
    return value


def _page_of(answer: Any) -> Page[Record]:
    if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
        raise OsisProtocolError("OSIS store answered list without items")
    return Page([record_of(r) for r in answer["items"]], answer.get("next_cursor"))


def _set_answer_of(answer: Any) -> Record | str:
    """Our server answers ``{"sid", "object"}`` (the record); plain OSIS answers the sid (a str: the
    caller fetches the record)."""
    if isinstance(answer, dict) and isinstance(answer.get("object"), dict):
        return record_of(answer["object"])
    sid = answer.get("sid") if isinstance(answer, dict) else answer
    if not isinstance(sid, str):
        raise OsisProtocolError("OSIS store answered set without a sid")
    return sid


def _claimed(answer: Any) -> Claimed:
    """A claim's answer: the outcome's name from a service that knows owners, else a boolean (then a
    take-over of a lapsed lease is not told apart from a free one)."""
    if isinstance(answer, str) and answer in Claimed._value2member_map_:
        return Claimed(answer)
    return Claimed.TAKEN if answer else Claimed.REFUSED


def _records_of(answer: Any) -> list[Record]:
    if not isinstance(answer, list):
        raise OsisProtocolError("OSIS store answered mark_interrupted badly")
    return [record_of(r) for r in answer]


#: this engine's column of the step table: each step's result, read from the server's answer
ANSWERS: Final[dict[type[Step], Callable[[Any], object]]] = {
    GetStep: record_of,
    ListStep: _page_of,
    CountStep: int,
    CreateStep: _set_answer_of,
    UpdateStep: _set_answer_of,
    DeleteStep: bool,
    ClaimStep: _claimed,
    ReleaseStep: lambda answer: None,
    MarkCutStep: _records_of,
}
check_handlers(ANSWERS, "the osis wire mapping (answers)")


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
