"""The OpenAPI 3.1 document served at ``/openapi.json``, written by hand next to the routes it describes.

``tests/channels/web/test_openapi.py`` runs schemathesis against it and checks that every route of the
app is documented, so the document and the implementation cannot drift apart silently. Bearer security
is declared only when ``[web] tokens`` are configured (without tokens the API has no authentication).
"""

from __future__ import annotations

from typing import Any

from config import Settings

Schema = dict[str, Any]

CONTEXT_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"
ID_PATTERN = "^[a-z0-9]{1,32}$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(
    props: dict[str, Schema], *, required: tuple[str, ...] | None = None, closed: bool = False
) -> Schema:
    out: Schema = {
        "type": "object",
        "properties": props,
        "required": list(props if required is None else required),
    }
    if closed:
        out["additionalProperties"] = False
    return out


def _page(item: str, **extra: Schema) -> Schema:
    props: dict[str, Schema] = {
        "items": {"type": "array", "items": _ref(item)},
        "next_cursor": {"type": ["string", "null"]},
        **extra,
    }
    return _obj(props)


_S = {"type": "string"}
#: one server-sent event as schemathesis (and any SSE reader) sees it: a name and a data line
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {
            "type": "string",
            "enum": ["start", "delta", "tool_start", "tool_end", "usage", "done", "error", "command"],
        },
        "data": {"type": "string"},
    },
    "required": ["event", "data"],
}
_OPENAI_EVENT = {"type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"]}
_I = {"type": "integer"}
_N = {"type": "number"}
_B = {"type": "boolean"}

SCHEMAS: dict[str, Schema] = {
    "Error": _obj({"error": _obj({"code": _S, "message": _S})}),
    "Conversation": _obj(
        {
            "id": _S,
            "title": _S,
            "message_count": _I,
            "is_archived": _B,
            "tags": {"type": "array", "items": _S},
            "last_channel": _S,
            "cleared_through_seq": _I,
            "created_at": _I,
            "updated_at": _I,
        }
    ),
    "Message": _obj(
        {
            "id": _S,
            "conversation_id": _S,
            "seq": _I,
            "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
            "content": _S,
            "channel": _S,
            "status": {"type": "string", "enum": ["complete", "interrupted", "error"]},
            "timestamp": _I,
            "tool_calls": {"type": "array"},
            "tool_call_id": _S,
            "name": _S,
            "sender": _S,
            "model": _S,
            "prompt_tokens": _I,
            "completion_tokens": _I,
            "message_type": _S,
            "archived": _B,
        }
    ),
    "Memory": _obj(
        {
            "id": _S,
            "content": _S,
            "kind": _S,
            "source_conversation_id": _S,
            "source_channel": _S,
            "created_at": _I,
        }
    ),
    "AuditEntry": _obj(
        {
            "id": _S,
            "tool": _S,
            "arguments": _S,
            "result_summary": _S,
            "ok": _B,
            "error": _S,
            "duration_ms": _N,
            "conversation_id": _S,
            "channel": _S,
            "created_at": _I,
        }
    ),
    "UsageEntry": _obj(
        {
            "id": _S,
            "provider": _S,
            "model": _S,
            "prompt_tokens": _I,
            "completion_tokens": _I,
            "latency_ms": _N,
            "conversation_id": _S,
            "channel": _S,
            "ok": _B,
            "created_at": _I,
        }
    ),
    "Aggregate": _obj(
        {"key": _S, "count": _I, "prompt_tokens": _I, "completion_tokens": _I, "errors": _I, "total_ms": _N}
    ),
}

#: optional body fields accept null as "not given"
_CONTEXT_BODY: Schema = {"type": ["string", "null"], "pattern": CONTEXT_PATTERN}
_CONTEXT_PARAMS: list[Schema] = [
    {
        "name": "context_name",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "pattern": CONTEXT_PATTERN},
    },
    {
        "name": "X-Hero-Context",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": CONTEXT_PATTERN},
    },
]
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}]
_PAGING: list[Schema] = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 200},
    },
    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 512}},
]
_CONV_FILTER = [
    {
        "name": "conversation_id",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "pattern": ID_PATTERN},
    }
]

_REASONS = {
    400: "Invalid input (bad JSON, wrong field types, invalid id or context name)",
    401: "Missing or invalid bearer token",
    404: "Missing, or belonging to another user or context (indistinguishable)",
    409: "The conversation is busy",
    413: "The body or the message is too large",
    503: "Shutting down, or the store is unavailable",
}


def _json(schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Schema]:
    return {str(c): _json(_ref("Error"), _REASONS[c]) for c in (*codes, 401)}


def _op(
    op_id: str,
    summary: str,
    responses: dict[str, Schema],
    *,
    params: list[Schema] | None = None,
    body: Schema | None = None,
    body_required: bool = True,
    context: bool = True,
) -> Schema:
    op: Schema = {
        "operationId": op_id,
        "summary": summary,
        "parameters": (params or []) + (_CONTEXT_PARAMS if context else []),
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
    return op


def _api_paths() -> dict[str, Schema]:
    conv = _ref("Conversation")
    store_errors = (400, 404, 503)
    return {
        "/api/conversations": {
            "get": _op(
                "listConversations",
                "Conversations, most recently updated first",
                {
                    "200": _json(_page("Conversation", active_id={"type": ["string", "null"]}, context=_S)),
                    **_errors(400, 503),
                },
                params=[
                    *_PAGING,
                    {
                        "name": "archived",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["true", "false", "all"]},
                    },
                ],
            ),
            "post": _op(
                "createConversation",
                "Create a conversation (it becomes the active one)",
                {"201": _json(conv, "Created"), **_errors(400, 413, 503)},
                body=_obj(
                    {"title": {"type": ["string", "null"], "maxLength": 200}, "context_name": _CONTEXT_BODY},
                    required=(),
                    closed=True,
                ),
                body_required=False,
            ),
        },
        "/api/conversations/{id}": {
            "get": _op(
                "getConversation",
                "One conversation",
                {"200": _json(conv), **_errors(*store_errors)},
                params=_ID,
            ),
            "patch": _op(
                "updateConversation",
                "Rename, archive or tag",
                {"200": _json(conv), **_errors(400, 404, 413, 503)},
                params=_ID,
                body=_obj(
                    {
                        "title": {"type": ["string", "null"], "maxLength": 200},
                        "is_archived": {"type": ["boolean", "null"]},
                        "tags": {
                            "type": ["array", "null"],
                            "maxItems": 32,
                            "items": {"type": "string", "maxLength": 64},
                        },
                        "context_name": _CONTEXT_BODY,
                    },
                    required=(),
                    closed=True,
                ),
            ),
            "delete": _op(
                "deleteConversation",
                "Hard delete with all messages",
                {"204": {"description": "Deleted"}, **_errors(*store_errors)},
                params=_ID,
            ),
        },
        "/api/conversations/{id}/messages": {
            "get": _op(
                "listMessages",
                "Messages in order; cleared turns included with archived=true",
                {"200": _json(_page("Message", conversation=conv)), **_errors(*store_errors)},
                params=[
                    *_ID,
                    *_PAGING,
                    {
                        "name": "include_archived",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["true", "false"]},
                    },
                ],
            ),
        },
        "/api/conversations/{id}/clear": {
            "post": _op(
                "clearConversation",
                "Archive the turns so far (memory is saved first)",
                {"200": _json(conv), **_errors(409, *store_errors)},
                params=_ID,
            ),
        },
        "/api/chat": {
            "post": _op(
                "chat",
                "Send a message; the answer is an SSE stream of typed events",
                {
                    "200": {
                        "description": "text/event-stream: start, delta, tool_start, tool_end, usage, done | "
                        "error; or one command event",
                        "content": {"text/event-stream": {"schema": _SSE_EVENT}},
                    },
                    **_errors(400, 404, 413, 503),
                },
                body=_obj(
                    {
                        "message": {"type": "string", "minLength": 1},
                        "conversation_id": {"type": ["string", "null"], "pattern": ID_PATTERN},
                        "context_name": _CONTEXT_BODY,
                    },
                    required=("message",),
                    closed=True,
                ),
            ),
        },
        "/api/memories": {
            "get": _op(
                "listMemories",
                "Memories, newest first",
                {"200": _json(_page("Memory")), **_errors(400, 503)},
                params=_PAGING,
            ),
        },
        "/api/memories/{id}": {
            "get": _op(
                "getMemory",
                "One memory",
                {"200": _json(_ref("Memory")), **_errors(*store_errors)},
                params=_ID,
            ),
            "delete": _op(
                "deleteMemory",
                "Forget a memory",
                {"204": {"description": "Deleted"}, **_errors(*store_errors)},
                params=_ID,
            ),
        },
        "/api/stats": {
            "get": _op(
                "stats",
                "Counts for the caller's scope",
                {
                    "200": _json(
                        _obj(
                            {
                                "context": _S,
                                "user": _S,
                                "conversations": _I,
                                "archived_conversations": _I,
                                "messages": _I,
                                "memories": _I,
                                "tool_calls": _I,
                                "llm_calls": _I,
                                "prompt_tokens": _I,
                                "completion_tokens": _I,
                            }
                        )
                    ),
                    **_errors(400, 503),
                },
            ),
        },
        "/api/audit": {
            "get": _op(
                "audit",
                "Tool executions, newest first",
                {"200": _json(_page("AuditEntry")), **_errors(400, 503)},
                params=[*_PAGING, *_CONV_FILTER],
            ),
        },
        "/api/usage": {
            "get": _op(
                "usage",
                "LLM calls, newest first, with totals by model and by day",
                {
                    "200": _json(
                        _page(
                            "UsageEntry",
                            summary=_obj(
                                {
                                    "by_model": {"type": "array", "items": _ref("Aggregate")},
                                    "by_day": {"type": "array", "items": _ref("Aggregate")},
                                }
                            ),
                        )
                    ),
                    **_errors(400, 503),
                },
                params=[*_PAGING, *_CONV_FILTER],
            ),
        },
        "/api/contexts": {
            "get": _op(
                "contexts",
                "The default context and those where the caller has conversations",
                {
                    "200": _json(
                        _obj({"default": _S, "current": _S, "contexts": {"type": "array", "items": _S}})
                    ),
                    **_errors(400, 503),
                },
            ),
        },
    }


def _openai_paths(model_name: str) -> dict[str, Schema]:
    message = {
        "type": "object",
        "properties": {"role": _S, "content": {"type": ["string", "array"]}},
        "required": ["role"],
    }
    completion = _obj(
        {
            "id": _S,
            "object": {"const": "chat.completion"},
            "created": _I,
            "model": _S,
            "choices": {"type": "array"},
            "usage": _obj({"prompt_tokens": _I, "completion_tokens": _I, "total_tokens": _I}),
        }
    )
    return {
        "/v1/models": {
            "get": _op(
                "listModels",
                f"The one model, {model_name!r}",
                {
                    "200": _json(
                        _obj(
                            {"object": _S, "data": {"type": "array", "items": _obj({"id": _S, "object": _S})}}
                        )
                    ),
                    **_errors(),
                },
                context=False,
            ),
        },
        "/v1/chat/completions": {
            "post": _op(
                "chatCompletions",
                "OpenAI Chat Completions; the last user message is the turn input",
                {
                    "200": {
                        "description": "A chat.completion, or with stream=true an SSE stream of chunks "
                        "ending in data: [DONE]",
                        "content": {
                            "application/json": {"schema": completion},
                            "text/event-stream": {"schema": _OPENAI_EVENT},
                        },
                    },
                    **_errors(400, 404, 409, 413, 503),
                },
                params=[
                    {
                        "name": "X-Hero-Conversation",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": ID_PATTERN},
                    }
                ],
                body={
                    "type": "object",
                    "required": ["messages"],
                    "properties": {
                        "model": _S,
                        "messages": {"type": "array", "minItems": 1, "items": message},
                        "stream": _B,
                        "user": {"type": "string", "maxLength": 256},
                        "stream_options": {"type": "object"},
                        "context_name": _CONTEXT_BODY,
                    },
                },
            ),
        },
    }


def _ops_paths() -> dict[str, Schema]:
    ready = {"200": _json(_obj({"status": _S})), "503": _json(_ref("Error"), "Not ready")}
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Alive",
                "responses": {"200": _json(_obj({"status": _S}))},
            }
        },
        "/readyz": {
            "get": {"operationId": "readyz", "summary": "Store and provider reachable", "responses": ready}
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus text",
                "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": _S}}}},
            }
        },
    }


def openapi_document(settings: Settings) -> Schema:
    """The document for this configuration."""
    secured = bool(settings.web.tokens)
    api = {**_api_paths(), **_openai_paths(settings.web.api_model_name)}
    for item in api.values():
        for op in item.values():
            if secured:
                op["security"] = [{"bearer": []}]
            else:
                op["responses"].pop("401", None)
    doc: Schema = {
        "openapi": "3.1.0",
        "info": {"title": "hero-agent web API", "version": "1"},
        "paths": {**api, **_ops_paths()},
        "components": {"schemas": SCHEMAS},
    }
    if secured:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc
