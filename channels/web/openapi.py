"""The OpenAPI 3.1 document served at ``/openapi.json``, written by hand next to the routes it describes.

``tests/channels/web/test_schemathesis.py`` runs schemathesis against it and ``test_ops.py`` checks
that every route of the app is documented, so the document and the implementation cannot drift apart
silently. Bearer security is declared only when ``[web] tokens`` are configured (without tokens the
API has no authentication).
"""

from __future__ import annotations

from agent.media import IMAGE_TYPES
from channels.web.openapi_schemas import (
    BOOL,
    CONTEXT_BODY,
    CONVERSATION_FILTER,
    ID_PARAM,
    ID_PATTERN,
    IDEMPOTENCY_KEY,
    IMAGE_UPLOAD,
    INT,
    OPENAI_EVENT,
    PAGING,
    PERIOD_PARAMS,
    REASONS,
    SCHEMAS,
    SEARCH_PARAM,
    SSE_EVENT,
    STR,
    Schema,
    errors,
    json_answer,
    obj,
    op,
    page,
    ref,
)
from config import Settings


def voice_chat_op() -> Schema:
    """``POST /api/voice/chat``: multipart audio in, the SSE stream of /api/chat out."""
    operation = op(
        "voiceChat",
        "Send a voice message: transcribed, then answered like /api/chat (a transcript event follows start)",
        {
            "200": {
                "description": "text/event-stream: start, transcript, then as /api/chat",
                "content": {"text/event-stream": {"schema": SSE_EVENT}},
            },
            **errors(400, 404, 413, 415, 502, 503),
        },
        params=[IDEMPOTENCY_KEY],
    )
    operation["requestBody"] = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": obj(
                    {
                        "audio": {
                            "type": "string",
                            "format": "binary",
                            "description": "OGG/Opus, WAV, MP3, M4A, WebM or FLAC",
                        },
                        "conversation_id": {"type": "string", "pattern": ID_PATTERN},
                        "context_name": CONTEXT_BODY,
                    },
                    required=("audio",),
                    closed=True,
                )
            }
        },
    }
    return operation


def _api_paths() -> dict[str, Schema]:
    conv = ref("Conversation")
    store_errors = (400, 404, 503)
    return {
        "/api/conversations": {
            "get": op(
                "listConversations",
                "Conversations, most recently updated first",
                {
                    "200": json_answer(
                        page("Conversation", active_id={"type": ["string", "null"]}, context=STR)
                    ),
                    **errors(400, 503),
                },
                params=[
                    *PAGING,
                    {
                        "name": "archived",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["true", "false", "all"]},
                    },
                    SEARCH_PARAM,
                ],
            ),
            "post": op(
                "createConversation",
                "Create a conversation (it becomes the active one)",
                {"201": json_answer(conv, "Created"), **errors(400, 413, 503)},
                body=obj(
                    {"title": {"type": ["string", "null"], "maxLength": 200}, "context_name": CONTEXT_BODY},
                    required=(),
                    closed=True,
                ),
                body_required=False,
            ),
        },
        "/api/conversations/{id}": {
            "get": op(
                "getConversation",
                "One conversation",
                {"200": json_answer(conv), **errors(*store_errors)},
                params=ID_PARAM,
            ),
            "patch": op(
                "updateConversation",
                "Rename, archive or tag",
                {"200": json_answer(conv), **errors(400, 404, 413, 503)},
                params=ID_PARAM,
                body=obj(
                    {
                        "title": {"type": ["string", "null"], "maxLength": 200},
                        "is_archived": {"type": ["boolean", "null"]},
                        "tags": {
                            "type": ["array", "null"],
                            "maxItems": 32,
                            "items": {"type": "string", "maxLength": 64},
                        },
                        "context_name": CONTEXT_BODY,
                    },
                    required=(),
                    closed=True,
                ),
            ),
            "delete": op(
                "deleteConversation",
                "Hard delete with all messages",
                {"204": {"description": "Deleted"}, **errors(*store_errors)},
                params=ID_PARAM,
            ),
        },
        "/api/conversations/{id}/messages": {
            "get": op(
                "listMessages",
                "Messages in order; cleared turns included with archived=true",
                {"200": json_answer(page("Message", conversation=conv)), **errors(*store_errors)},
                params=[
                    *ID_PARAM,
                    *PAGING,
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
            "post": op(
                "clearConversation",
                "Archive the turns so far (memory is saved first)",
                {"200": json_answer(conv), **errors(409, *store_errors)},
                params=ID_PARAM,
            ),
        },
        "/api/chat": {
            "post": op(
                "chat",
                "Send a message; the answer is an SSE stream of typed events",
                {
                    "200": {
                        "description": "text/event-stream: start, delta, tool_start, tool_end, usage, retry, "
                        "done | error; or one command event",
                        "content": {"text/event-stream": {"schema": SSE_EVENT}},
                    },
                    **errors(400, 404, 413, 503),
                },
                params=[IDEMPOTENCY_KEY],
                body={
                    **obj(
                        {
                            "message": {
                                "type": "string",
                                "description": "may be empty when images are sent; absent with retry_of "
                                "and regenerate_of",
                            },
                            "conversation_id": {"type": ["string", "null"], "pattern": ID_PATTERN},
                            "context_name": CONTEXT_BODY,
                            "images": {"type": "array", "items": IMAGE_UPLOAD, "maxItems": 16},
                            "retry_of": {
                                "type": "string",
                                "pattern": ID_PATTERN,
                                "description": "answer this stored user message (the last) again",
                            },
                            "regenerate_of": {
                                "type": "string",
                                "pattern": ID_PATTERN,
                                "description": "answer the last user message again although it was answered",
                            },
                            "edit_of": {
                                "type": "string",
                                "pattern": ID_PATTERN,
                                "description": "message replaces this user message (the last)",
                            },
                        },
                        required=(),
                        closed=True,
                    ),
                    "anyOf": [
                        {"required": ["message"]},
                        {"required": ["retry_of", "conversation_id"]},
                        {"required": ["regenerate_of", "conversation_id"]},
                    ],
                },
            ),
        },
        "/api/voice/chat": {
            "post": voice_chat_op(),
        },
        "/api/media": {
            "get": op(
                "mediaLimits",
                "What the caller may send: image and voice caps, and whether images and voice are on",
                {
                    "200": json_answer(
                        obj(
                            {
                                "images": BOOL,
                                "max_image_bytes": INT,
                                "max_images": INT,
                                "image_types": {"type": "array", "items": STR},
                                "voice": BOOL,
                                "max_audio_bytes": INT,
                                "max_audio_seconds": INT,
                            }
                        )
                    ),
                    **errors(),
                },
                context=False,
            ),
        },
        "/api/attachments/{id}": {
            "get": op(
                "getAttachment",
                "A stored image; with the signed ?t= of a message's attachment url no bearer token is needed",
                {
                    "200": {
                        "description": "the image bytes",
                        "content": {
                            t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES
                        },
                    },
                    **errors(400, 404, 503),
                },
                params=[
                    *ID_PARAM,
                    {"name": "t", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                context=False,
            ),
        },
        "/api/memories": {
            "get": op(
                "listMemories",
                "Memories, newest first",
                {"200": json_answer(page("Memory")), **errors(400, 503)},
                params=PAGING,
            ),
        },
        "/api/memories/{id}": {
            "get": op(
                "getMemory",
                "One memory",
                {"200": json_answer(ref("Memory")), **errors(*store_errors)},
                params=ID_PARAM,
            ),
            "delete": op(
                "deleteMemory",
                "Forget a memory",
                {"204": {"description": "Deleted"}, **errors(*store_errors)},
                params=ID_PARAM,
            ),
        },
        "/api/stats": {
            "get": op(
                "stats",
                "Counts for the caller's scope",
                {
                    "200": json_answer(
                        obj(
                            {
                                "context": STR,
                                "user": STR,
                                "conversations": INT,
                                "archived_conversations": INT,
                                "messages": INT,
                                "memories": INT,
                                "tool_calls": INT,
                                "llm_calls": INT,
                                "prompt_tokens": INT,
                                "completion_tokens": INT,
                            }
                        )
                    ),
                    **errors(400, 503),
                },
            ),
        },
        "/api/audit": {
            "get": op(
                "audit",
                "Tool executions, newest first",
                {"200": json_answer(page("AuditEntry")), **errors(400, 503)},
                params=[*PAGING, *CONVERSATION_FILTER],
            ),
        },
        "/api/usage": {
            "get": op(
                "usage",
                "LLM calls, newest first, with totals by model, by UTC day and by day and model "
                "(all over since/until when given)",
                {
                    "200": json_answer(
                        page(
                            "UsageEntry",
                            since={"type": ["integer", "null"]},
                            until={"type": ["integer", "null"]},
                            summary=obj(
                                {
                                    "by_model": {"type": "array", "items": ref("Aggregate")},
                                    "by_day": {"type": "array", "items": ref("Aggregate")},
                                    "by_day_model": {"type": "array", "items": ref("DayModelUsage")},
                                }
                            ),
                        )
                    ),
                    **errors(400, 503),
                },
                params=[*PAGING, *CONVERSATION_FILTER, *PERIOD_PARAMS],
            ),
        },
        "/api/contexts": {
            "get": op(
                "contexts",
                "The default context and those where the caller has conversations",
                {
                    "200": json_answer(
                        obj({"default": STR, "current": STR, "contexts": {"type": "array", "items": STR}})
                    ),
                    **errors(400, 503),
                },
            ),
        },
    }


def _pairing_paths() -> dict[str, Schema]:
    link = obj({"telegram_id": STR, "user": STR, "linked_at": INT, "by": STR})
    return {
        "/api/pairing/approve": {
            "post": op(
                "approvePairing",
                "Link the Telegram id that asked for this pairing code to the caller",
                {
                    "200": json_answer(link),
                    **errors(400, 413),
                    "404": json_answer(ref("Error"), "No such pending code (or it expired)"),
                    "409": json_answer(ref("Error"), "The config links that Telegram id ([users.*])"),
                    "503": json_answer(ref("Error"), REASONS[503]),
                },
                body=obj({"code": {"type": "string", "maxLength": 64}}, required=("code",), closed=True),
                context=False,
            ),
        },
        "/api/pairing/links": {
            "get": op(
                "pairingLinks",
                "The Telegram ids linked to the caller by approved pairings",
                {"200": json_answer(obj({"items": {"type": "array", "items": link}})), **errors(503)},
                context=False,
            ),
        },
    }


def _openai_paths(model_name: str) -> dict[str, Schema]:
    part = {"type": "object", "properties": {"type": STR}, "required": ["type"]}
    message = {
        "type": "object",
        "properties": {
            "role": STR,
            "content": {
                "anyOf": [STR, {"type": "array", "items": part}, {"type": "null"}],
                "description": "text, or parts: text, image_url, input_audio",
            },
            "name": STR,
            "tool_call_id": STR,
        },
        "required": ["role"],
    }
    choice = obj(
        {
            "index": INT,
            "message": obj({"role": STR, "content": {"type": ["string", "null"]}}),
            "finish_reason": STR,
        }
    )
    completion = obj(
        {
            "id": {"type": "string", "description": "chatcmpl-<turn id>, the same for a replayed answer"},
            "object": {"const": "chat.completion"},
            "created": INT,
            "model": STR,
            "choices": {"type": "array", "items": choice},
            "usage": obj({"prompt_tokens": INT, "completion_tokens": INT, "total_tokens": INT}),
        }
    )
    model = obj({"id": STR, "object": STR, "created": INT, "owned_by": STR})
    return {
        "/v1/models": {
            "get": op(
                "listModels",
                f"The one model, {model_name!r}",
                {
                    "200": json_answer(
                        obj(
                            {
                                "object": STR,
                                "data": {"type": "array", "items": model},
                            }
                        )
                    ),
                    **errors(),
                },
                context=False,
            ),
        },
        "/v1/models/{model}": {
            "get": op(
                "retrieveModel",
                f"The model {model_name!r} (404 for any other id)",
                {"200": json_answer(model), **errors(404)},
                params=[{"name": "model", "in": "path", "required": True, "schema": STR}],
                context=False,
            ),
        },
        "/v1/chat/completions": {
            "post": op(
                "chatCompletions",
                "OpenAI Chat Completions; the last user message is the turn input",
                {
                    "200": {
                        "description": "A chat.completion, or with stream=true an SSE stream of chunks "
                        "ending in data: [DONE]",
                        "content": {
                            "application/json": {"schema": completion},
                            "text/event-stream": {"schema": OPENAI_EVENT},
                        },
                    },
                    **errors(400, 404, 409, 413, 500, 502, 503, 504),
                },
                params=[
                    {
                        "name": "X-Hero-Conversation",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": ID_PATTERN},
                    },
                    IDEMPOTENCY_KEY,
                ],
                body={
                    "type": "object",
                    "required": ["messages"],
                    "properties": {
                        "model": STR,
                        "messages": {"type": "array", "minItems": 1, "items": message},
                        "stream": BOOL,
                        "user": {"type": "string", "maxLength": 256},
                        "stream_options": {"type": "object"},
                        "context_name": CONTEXT_BODY,
                        "n": {"type": "integer", "minimum": 1, "maximum": 1},
                        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                        "seed": INT,
                        "max_tokens": {"type": "integer", "minimum": 1},
                        "max_completion_tokens": {"type": "integer", "minimum": 1},
                        "stop": {
                            "anyOf": [STR, {"type": "array", "items": STR, "maxItems": 4}, {"type": "null"}]
                        },
                        "response_format": {"type": "object"},
                        "tool_choice": {"anyOf": [STR, {"type": "object"}]},
                        "parallel_tool_calls": BOOL,
                    },
                },
            ),
        },
    }


def _ops_paths() -> dict[str, Schema]:
    down = {
        "type": "array",
        "items": obj({"server": STR, "state": {"enum": ["starting", "restarting", "unavailable"]}}),
    }
    readiness = obj(
        {
            "status": {"enum": ["ready", "degraded"]},
            "degraded": obj({"mcp_servers": down}),
            "channels": obj({"telegram": {"enum": ["polling", "standby", "webhook"]}}),
        },
        required=("status",),
    )
    ready = {"200": json_answer(readiness), "503": json_answer(ref("Error"), "Not ready")}
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Alive",
                "responses": {"200": json_answer(obj({"status": STR}))},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Store and provider reachable (degraded: MCP servers down)",
                "responses": ready,
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus text",
                "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": STR}}}},
            }
        },
    }


def openapi_document(settings: Settings) -> Schema:
    """The document for this configuration."""
    secured = bool(settings.web.tokens)
    api = {**_api_paths(), **_pairing_paths(), **_openai_paths(settings.web.api_model_name)}
    for item in api.values():
        for operation in item.values():
            if secured:
                operation["security"] = [{"bearer": []}]
            else:
                operation["responses"].pop("401", None)
    doc: Schema = {
        "openapi": "3.1.0",
        "info": {"title": "hero-agent web API", "version": "1"},
        "paths": {**api, **_ops_paths()},
        "components": {"schemas": SCHEMAS},
    }
    if secured:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc
