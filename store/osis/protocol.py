"""The OSIS JSON-RPC 2.0 protocol of domain ``ai``, in one place (SPEC 7.3; documented in docs/osis.md).

Methods are ``<object>.<verb>`` with the lower-cased object name (``agentmessage.set``) and named
params. Plain OSIS verbs: ``get``, ``set``, ``delete``, ``exist``, ``list``. hero-agent extensions, needed
by the engine seam and absent from plain OSIS: ``<object>.count``, ``<object>.restore``,
``agentlease.claim``/``agentlease.release``, ``store.contexts``, ``store.dump`` (paged),
``store.restore_batch`` and ``store.ping``; newer, optional ones (:data:`OPTIONAL_METHODS`: the client
works without them, at the documented cost): ``agentlease.get``/``agentlease.list`` and the ``owner``/
``replace`` params of ``agentlease.claim`` (a dead holder on the claimer's host is taken over at once
instead of after its lease lapses), ``store.mark_interrupted`` (the marks of a cut turn in the same
request batch that opens the next turn, instead of a read and a create per mark).

Both sides use this module: the method table (params and result shapes) drives the server's param
validation, the client's start-up check and the OpenRPC document; the error table maps store errors to
JSON-RPC error codes and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from store.errors import Conflict, InvalidInput, NotFound, StoreError, StoreUnavailable
from store.models import Kind

PROTOCOL_VERSION: Final = "1.0.0"
DOMAIN: Final = "ai"
CONTEXT_HEADER: Final = "X-Hero-Context"
#: 16 MiB: one attachment (at most 10 MiB, 13.4 MiB as base64) fits in one request
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
MAX_BATCH: Final = 100
DUMP_PAGE: Final = 500
RESTORE_BATCH: Final = 500

# JSON-RPC 2.0 codes
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# application codes (the -32000..-32099 "server error" range)
STORE_ERROR: Final = -32000
NOT_FOUND: Final = -32001
INVALID_INPUT: Final = -32002
CONFLICT: Final = -32003
UNAUTHORIZED: Final = -32004
UNAVAILABLE: Final = -32005


class OsisAuthError(StoreError):
    """The OSIS service refused our credentials (missing or wrong ``store.secret``). Not retryable."""

    code = "store_unauthorized"
    user_safe = True


class OsisProtocolError(StoreError):
    """The service answered something that is not valid OSIS JSON-RPC (a wrong URL, a proxy page)."""

    code = "store_protocol"
    user_safe = True


def error_code_for(exc: StoreError) -> int:
    """The JSON-RPC code a store error travels as."""
    for cls, code in (
        (NotFound, NOT_FOUND),
        (InvalidInput, INVALID_INPUT),
        (Conflict, CONFLICT),
        (StoreUnavailable, UNAVAILABLE),
        (OsisAuthError, UNAUTHORIZED),
    ):
        if isinstance(exc, cls):
            return code
    return STORE_ERROR


def store_error_for(code: int, message: str, data: Any = None) -> StoreError:
    """The store error a JSON-RPC error object stands for (the inverse of :func:`error_code_for`)."""
    if code == NOT_FOUND:
        kind = str(data.get("kind", "object")) if isinstance(data, dict) else "object"
        sid = str(data.get("sid", "")) if isinstance(data, dict) else ""
        return NotFound(kind, sid)
    if code in (INVALID_INPUT, INVALID_PARAMS):
        return InvalidInput(message)
    if code == CONFLICT:
        return Conflict(message)
    if code == UNAVAILABLE:
        return StoreUnavailable(message)
    if code == UNAUTHORIZED:
        return OsisAuthError(f"OSIS store refused the request: {message}")
    if code == METHOD_NOT_FOUND:
        return OsisProtocolError(f"OSIS store lacks a method: {message}")
    if code in (PARSE_ERROR, INVALID_REQUEST):
        return OsisProtocolError(f"OSIS store rejected the request: {message}")
    return StoreError(f"OSIS store error: {message}")


# -- the method table ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    schema: dict[str, Any]
    required: bool = True
    description: str = ""


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    params: tuple[Param, ...]
    result: dict[str, Any]
    summary: str
    extension: bool = False


_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_OBJ: dict[str, Any] = {"type": "object"}
_NULL: dict[str, Any] = {"type": "null"}

USER = Param("user_id", _STR, description="the user the call acts for (the scope is context + user)")
SID = Param("sid", {"type": "string", "pattern": "^[a-z0-9]{1,32}$"}, description="object id (base-36)")
RECORD_RESULT: dict[str, Any] = {"type": "object", "description": "the whole record"}
SET_RESULT: dict[str, Any] = {
    "oneOf": [
        {"type": "string", "description": "plain OSIS: the sid"},
        {
            "type": "object",
            "description": "hero-agent extension: the sid and the stored record",
            "properties": {"sid": _STR, "object": RECORD_RESULT},
            "required": ["sid"],
        },
    ]
}
LEASE_OWNER: dict[str, Any] = {
    "type": "object",
    "properties": {"host": _STR, "pid": _INT, "started": _INT},
    "required": ["host", "pid", "started"],
}
LEASE_RESULT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "user_id": _STR,
        "key": _STR,
        "holder": _STR,
        "owner": {"oneOf": [LEASE_OWNER, _NULL]},
        "expires_in_ms": {"type": ["integer", "null"], "description": "<= 0: lapsed; null: never"},
    },
}
PAGE_RESULT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "items": RECORD_RESULT},
        "next_cursor": {"type": ["string", "null"]},
    },
    "required": ["items"],
}


def _kind_methods(kind: Kind) -> list[Method]:
    obj = kind.rpc_name
    return [
        Method(f"{obj}.get", (USER, SID), RECORD_RESULT, f"One {kind.value} (NotFound if missing)."),
        Method(
            f"{obj}.set",
            (
                USER,
                Param("object", _OBJ, description="the fields to store (store-owned fields are ignored)"),
                Param("sid", SID.schema, required=False, description="update this object; absent: create"),
                Param(
                    "request_key",
                    {"type": "string", "maxLength": 200},
                    required=False,
                    description="create only: a repeated create with the same key returns the first object",
                ),
            ),
            SET_RESULT,
            f"Create (no sid) or update (merge) a {kind.value}.",
        ),
        Method(f"{obj}.delete", (USER, SID), _BOOL, "Delete; false if missing (conversation: + messages)."),
        Method(f"{obj}.exist", (USER, SID), _BOOL, "True when the object exists in the scope."),
        Method(
            f"{obj}.list",
            (
                USER,
                Param("filter", _OBJ, False, "field equality, or ops as key suffixes: seq__gt, role__in"),
                Param("order", _STR, False, "sort field, '-' prefix for descending (default created_at)"),
                Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, False, "page size"),
                Param("cursor", _STR, False, "next_cursor of the previous page"),
                Param("text", _STR, False, "text search over content/title, most relevant first"),
            ),
            PAGE_RESULT,
            f"A page of {kind.value} records.",
        ),
        Method(
            f"{obj}.count",
            (USER, Param("filter", _OBJ, False, "as in list")),
            _INT,
            "Number of matching records.",
            extension=True,
        ),
        Method(
            f"{obj}.restore",
            (Param("record", _OBJ, description="a dumped record, sid/scope/timestamps kept"),),
            _BOOL,
            "Write a dumped record as it is; false when an identical one is present.",
            extension=True,
        ),
    ]


def _store_methods() -> list[Method]:
    ttl = Param("ttl_ms", {"type": ["integer", "null"]}, description="lease lifetime; null never expires")
    key = Param("key", _STR, description="lease name, unique per scope")
    holder = Param("holder", _STR, description="who takes the lease")
    owner = Param(
        "owner",
        {**LEASE_OWNER, "type": ["object", "null"]},
        False,
        "the holder's process (host: boot id/pid ns, pid, started), null when unknown",
    )
    replace = Param("replace", _STR, False, "take the lease also while this (dead) holder has it")
    dump_item = {"type": "object", "properties": {"kind": _STR, "record": RECORD_RESULT}}
    return [
        Method(
            "agentlease.claim",
            (USER, key, holder, ttl, owner, replace),
            {
                "oneOf": [
                    _BOOL,
                    {"enum": ["", "taken", "renewed", "lapsed", "replaced"], "description": "with owner"},
                ]
            },
            "Take a named lease: free, lapsed, ours (renewed) or held by 'replace'; refused: false or ''.",
            extension=True,
        ),
        Method(
            "agentlease.get",
            (USER, key),
            {"oneOf": [LEASE_RESULT, _NULL]},
            "The lease as stored (lapsed ones too), or null.",
            extension=True,
        ),
        Method(
            "agentlease.list",
            (Param("prefix", _STR, description="key prefix"),),
            {"type": "array", "items": LEASE_RESULT},
            "Every lease of the header's context (all users) whose key starts with the prefix.",
            extension=True,
        ),
        Method(
            "store.mark_interrupted",
            (
                USER,
                Param("conversation_id", SID.schema, description="the conversation"),
                Param(
                    "request_key",
                    {"type": "string", "maxLength": 200},
                    False,
                    "the key of the user message the same batch stores (that one gets no marker)",
                ),
            ),
            {"type": "array", "items": RECORD_RESULT},
            "Mark the conversation's cut turn (interrupted markers); the messages created.",
            extension=True,
        ),
        Method(
            "agentlease.release",
            (USER, key, holder),
            _NULL,
            "Drop the lease if the holder has it.",
            extension=True,
        ),
        Method(
            "store.contexts",
            (),
            {"type": "array", "items": _STR},
            "Every context holding at least one record.",
            extension=True,
        ),
        Method(
            "store.dump",
            (
                Param("cursor", _STR, False, "next_cursor of the previous page"),
                Param("limit", {"type": "integer", "minimum": 1, "maximum": 5000}, False, "page size"),
            ),
            {
                "type": "object",
                "properties": {
                    "items": {"type": "array", "items": dump_item},
                    "next_cursor": {"type": ["string", "null"]},
                },
            },
            "Every record of the header's context, all users, in the engine's dump order.",
            extension=True,
        ),
        Method(
            "store.restore_batch",
            (
                Param(
                    "items",
                    {"type": "array", "items": dump_item, "maxItems": RESTORE_BATCH},
                    description="dumped records of the header's context",
                ),
            ),
            _INT,
            "restore each item in one transaction (all or nothing); returns how many were written.",
            extension=True,
        ),
        Method("store.ping", (), {"const": "pong"}, "The engine can serve requests.", extension=True),
        Method(
            "store.rename_user",
            (
                Param("from_user", _STR, description="the user whose records move"),
                Param("to_user", _STR, description="the user they move to"),
                Param("merge", {"type": "boolean"}, False, "allow a target that already has records"),
            ),
            {"type": "object", "additionalProperties": {"type": "integer"}},
            "Move every record of a user in the header's context to another user, atomically; "
            "counts per kind. Optional: clients say so when a server lacks it.",
            extension=True,
        ),
        Method("rpc.discover", (), _OBJ, "This service's OpenRPC document."),
    ]


METHODS: Final[dict[str, Method]] = {m.name: m for k in Kind for m in _kind_methods(k)} | {
    m.name: m for m in _store_methods()
}
KIND_BY_OBJECT: Final[dict[str, Kind]] = {k.rpc_name: k for k in Kind}

#: methods the client uses only when rpc.discover lists them (see the module docstring for the
#: fallbacks; ``store.rename_user`` is an operator's command, not the daemon's path)
OPTIONAL_METHODS: Final[frozenset[str]] = frozenset(
    {"agentlease.get", "agentlease.list", "store.mark_interrupted", "store.rename_user"}
)
#: methods the osis client needs; rpc.discover on a server lacking any of them fails the start-up check
REQUIRED_METHODS: Final[frozenset[str]] = frozenset(METHODS) - OPTIONAL_METHODS


def openrpc_document(server_url: str = "/hero_osis_ai/rpc") -> dict[str, Any]:
    """The OpenRPC 1.2 document ``rpc.discover`` and ``GET /openrpc.json`` answer."""
    methods = []
    for m in METHODS.values():
        entry: dict[str, Any] = {
            "name": m.name,
            "summary": m.summary,
            "paramStructure": "by-name",
            "params": [
                {
                    "name": p.name,
                    "required": p.required,
                    "schema": p.schema,
                    **({"description": p.description} if p.description else {}),
                }
                for p in m.params
            ],
            "result": {"name": "result", "schema": m.result},
        }
        if m.extension:
            entry["tags"] = [{"name": "hero-agent-extension"}]
        methods.append(entry)
    return {
        "openrpc": "1.2.6",
        "info": {
            "title": "hero_osis domain ai (hero-agent)",
            "version": PROTOCOL_VERSION,
            "description": f"Every call carries the context in the {CONTEXT_HEADER} header.",
        },
        "servers": [{"name": "osis", "url": server_url}],
        "methods": methods,
        "components": {
            "errors": {
                name: {"code": code, "message": name}
                for name, code in (
                    ("NotFound", NOT_FOUND),
                    ("InvalidInput", INVALID_INPUT),
                    ("Conflict", CONFLICT),
                    ("Unauthorized", UNAUTHORIZED),
                    ("Unavailable", UNAVAILABLE),
                    ("StoreError", STORE_ERROR),
                )
            }
        },
    }


def methods_in(document: Any) -> set[str]:
    """Method names an OpenRPC document lists (tolerant of junk: no names, no methods)."""
    if not isinstance(document, dict) or not isinstance(document.get("methods"), list):
        return set()
    return {m["name"] for m in document["methods"] if isinstance(m, dict) and isinstance(m.get("name"), str)}


def endpoint_for(url: str, domain: str = DOMAIN) -> str:
    """SPEC 7.3: ``url`` whose path ends in ``/rpc`` is the endpoint; else ``{url}_{domain}/rpc``.

    The rule applies to the path; a query string (if any) is kept at the end.
    """
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    if not path.endswith("/rpc"):
        path = f"{path}_{domain}/rpc"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
    "number": (int, float),
}


def check_params(method: Method, params: Any) -> dict[str, Any]:
    """Validate named params against the method table; raises ValueError naming the param."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ValueError("params must be an object (named params)")
    known = {p.name for p in method.params}
    for name in params:
        if name not in known:
            raise ValueError(f"unknown param {name!r}")
    for p in method.params:
        if p.name not in params:
            if p.required:
                raise ValueError(f"missing param {p.name!r}")
            continue
        types = p.schema.get("type")
        allowed = [types] if isinstance(types, str) else list(types or [])
        value = params[p.name]
        ok = not allowed or any(
            isinstance(value, _JSON_TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool))
            for t in allowed
        )
        if not ok:
            raise ValueError(f"param {p.name!r} must be {' or '.join(allowed)}")
    return params
