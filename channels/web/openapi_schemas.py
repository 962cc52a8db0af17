"""Building blocks of the OpenAPI document: component schemas, shared parameters and helpers."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

CONTEXT_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"
ID_PATTERN = "^[a-z0-9]{1,32}$"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict[str, Schema], *, required: tuple[str, ...] | None = None, closed: bool = False) -> Schema:
    out: Schema = {
        "type": "object",
        "properties": props,
        "required": list(props if required is None else required),
    }
    if closed:
        out["additionalProperties"] = False
    return out


def page(item: str, **extra: Schema) -> Schema:
    props: dict[str, Schema] = {
        "items": {"type": "array", "items": ref(item)},
        "next_cursor": {"type": ["string", "null"]},
        **extra,
    }
    return obj(props)


STR = {"type": "string"}
#: one server-sent event as schemathesis (and any SSE reader) sees it: a name and a data line
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {
            "type": "string",
            "enum": [
                "start",
                "transcript",
                "delta",
                "tool_start",
                "tool_end",
                "usage",
                "retry",
                "done",
                "error",
                "command",
            ],
        },
        "data": {"type": "string"},
    },
    "required": ["event", "data"],
}
OPENAI_EVENT = {"type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"]}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}

SCHEMAS: dict[str, Schema] = {
    "Error": obj({"error": obj({"code": STR, "message": STR})}),
    "Conversation": obj(
        {
            "id": STR,
            "title": STR,
            "message_count": INT,
            "is_archived": BOOL,
            "tags": {"type": "array", "items": STR},
            "last_channel": STR,
            "cleared_through_seq": INT,
            "model": {
                "type": "string",
                "description": "chosen with /model NAME; empty: the configured model",
            },
            "created_at": INT,
            "updated_at": INT,
        }
    ),
    "Message": obj(
        {
            "id": STR,
            "conversation_id": STR,
            "seq": INT,
            "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
            "content": STR,
            "channel": STR,
            "status": {"type": "string", "enum": ["complete", "interrupted", "error"]},
            "timestamp": INT,
            "tool_calls": {"type": "array", "items": ref("ToolCallInfo")},
            "tool_call_id": STR,
            "name": STR,
            "sender": STR,
            "model": STR,
            "prompt_tokens": INT,
            "completion_tokens": INT,
            "message_type": STR,
            "duration_ms": {"type": ["number", "null"]},
            "archived": BOOL,
            "attachments": {"type": "array", "items": ref("AttachmentInfo")},
            "turn_id": {"type": "string", "description": "the turn that wrote it (empty: older messages)"},
            "superseded_by": {
                "type": "string",
                "description": "the turn that replaced it (retry, regenerate, edit): stored, never sent to "
                "the model again; empty: current",
            },
        }
    ),
    "ToolCallInfo": obj({"id": STR, "name": STR, "arguments": STR}),
    "AttachmentInfo": {
        "type": "object",
        "description": "an image (kind image: id, name, mime, width, height, size, url) or a transcribed "
        "voice message (kind voice: mime, size, duration_s; its audio is not kept)",
        "properties": {
            "kind": {"type": "string", "enum": ["image", "voice"]},
            "id": STR,
            "name": STR,
            "mime": STR,
            "width": INT,
            "height": INT,
            "size": INT,
            "duration_s": NUM,
            "url": {"type": "string", "description": "same-origin link that works without the bearer token"},
        },
        "required": ["kind"],
    },
    "Memory": obj(
        {
            "id": STR,
            "content": STR,
            "kind": STR,
            "source_conversation_id": STR,
            "source_channel": STR,
            "created_at": INT,
        }
    ),
    "AuditEntry": obj(
        {
            "id": STR,
            "tool": STR,
            "arguments": STR,
            "result_summary": STR,
            "ok": BOOL,
            "error": STR,
            "duration_ms": NUM,
            "conversation_id": STR,
            "channel": STR,
            "created_at": INT,
        }
    ),
    "UsageEntry": obj(
        {
            "id": STR,
            "provider": STR,
            "model": STR,
            "prompt_tokens": INT,
            "completion_tokens": INT,
            "latency_ms": NUM,
            "conversation_id": STR,
            "channel": STR,
            "ok": BOOL,
            "created_at": INT,
        }
    ),
    "Aggregate": obj(
        {
            "key": STR,
            "count": INT,
            "prompt_tokens": INT,
            "completion_tokens": INT,
            "errors": INT,
            "total_ms": NUM,
        }
    ),
    "DayModelUsage": obj(
        {
            "day": {"type": "string", "description": "UTC day, YYYY-MM-DD"},
            "model": STR,
            "count": INT,
            "prompt_tokens": INT,
            "completion_tokens": INT,
            "errors": INT,
            "total_ms": NUM,
            "avg_ms": NUM,
        }
    ),
}

#: optional body fields accept null as "not given"
CONTEXT_BODY: Schema = {"type": ["string", "null"], "pattern": CONTEXT_PATTERN}
CONTEXT_PARAMS: list[Schema] = [
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
ID_PARAM = [
    {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}
]
IDEMPOTENCY_KEY: Schema = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key again (a retry after a lost response) gets the first answer, "
    "not a second turn",
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,200}$"},
}
PAGING: list[Schema] = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 200},
    },
    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 512}},
]
CONVERSATION_FILTER = [
    {
        "name": "conversation_id",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "pattern": ID_PATTERN},
    }
]

SEARCH_PARAM: Schema = {
    "name": "q",
    "in": "query",
    "required": False,
    "description": "Only conversations whose title has a word of this text, most relevant first, in one "
    "page (no cursor)",
    "schema": {"type": "string", "maxLength": 200},
}
#: the latest time ``since``/``until`` may name (the last ms of the year 9999)
MAX_TIME_MS = 253_402_300_799_999
PERIOD_PARAMS: list[Schema] = [
    {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_TIME_MS},
    }
    for name, description in (
        ("since", "Only calls at or after this time (ms since the epoch)"),
        ("until", "Only calls before this time (ms since the epoch)"),
    )
]

REASONS = {
    400: "Invalid input (bad JSON, wrong field types, invalid id or context name)",
    401: "Missing or invalid bearer token",
    404: "Missing, or belonging to another user or context (indistinguishable)",
    409: "The conversation is busy",
    413: "The body, the message, an image or the audio is too large",
    415: "The body is not of the expected content type",
    500: "An internal error (a bug; logged)",
    502: "The LLM provider, the transcription service or an image URL failed",
    503: "Shutting down, or the store or the transcription service is unavailable",
    504: "The turn took longer than the turn deadline",
}


def json_answer(schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*codes: int) -> dict[str, Schema]:
    return {str(c): json_answer(ref("Error"), REASONS[c]) for c in (*codes, 401)}


def op(
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
        "parameters": (params or []) + (CONTEXT_PARAMS if context else []),
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
    return op


IMAGE_UPLOAD: Schema = obj(
    {
        "data_url": {"type": "string", "pattern": "^data:", "description": "data:image/...;base64,..."},
        "name": STR,
    },
    required=("data_url",),
    closed=True,
)
