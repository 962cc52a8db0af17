"""REST routes over the caller's scope: conversations, messages, memories, stats, audit, usage, contexts.

Every handler authenticates first (401), then resolves the context (400), then touches the store with
the caller's (context, user) scope only: a foreign id answers 404 exactly like a missing one.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from channels.web.auth import authenticate, caller_scope, scope_of
from channels.web.errors import ApiError, read_json_object
from channels.web.media import sign_link
from channels.web.state import web_state
from channels.web.views import (
    aggregate_view,
    audit_view,
    bool_param,
    conversation_view,
    day_model_view,
    memory_view,
    message_view,
    only_keys,
    page_params,
    period_params,
    search_param,
    stats_view,
    str_field,
    usage_view,
)
from store import MAX_TAGS, MAX_TITLE_CHARS, Kind, Scope

CHANNEL = "web"


async def _body(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    return await read_json_object(
        request, web_state(request).settings.web.max_body_bytes, allow_empty=allow_empty
    )


def _title(body: dict[str, Any]) -> str | None:
    title = str_field(body, "title", max_len=MAX_TITLE_CHARS)
    if title is not None and not title.isprintable():
        raise ApiError(400, "invalid_field", "title contains control characters")
    return title


async def list_conversations(request: Request) -> Response:
    scope = caller_scope(request)
    limit, cursor = page_params(request)
    archived = bool_param(request, "archived", False, allow_all=True)
    text = search_param(request)
    if text is not None and cursor is not None:
        raise ApiError(400, "invalid_parameter", "a search (q) answers one page: no cursor")
    agent = web_state(request).agent
    page = await agent.store.conversations.list(
        scope, limit=limit, cursor=cursor, archived=archived, text=text
    )
    active = await agent.conversations.active(scope, channel=CHANNEL, create=False)
    return JSONResponse(
        {
            "items": [conversation_view(c) for c in page.items],
            "next_cursor": page.next_cursor,
            "active_id": active.sid if active else None,
            "context": scope.context,
        }
    )


async def create_conversation(request: Request) -> Response:
    user = authenticate(request)  # 401 before the body is read
    body = await _body(request, allow_empty=True)
    scope = scope_of(request, user, body)
    only_keys(body, {"title"})
    title = _title(body) or ""
    conv = await web_state(request).agent.conversations.new(scope, channel=CHANNEL, title=title)
    return JSONResponse(conversation_view(conv), status_code=201)


async def get_conversation(request: Request) -> Response:
    scope = caller_scope(request)
    conv = await web_state(request).agent.store.conversations.get(scope, request.path_params["id"])
    return JSONResponse(conversation_view(conv))


async def patch_conversation(request: Request) -> Response:
    user = authenticate(request)  # 401 before the body is read
    body = await _body(request)
    scope = scope_of(request, user, body)
    only_keys(body, {"title", "is_archived", "tags"})
    title = _title(body)
    archived = body.get("is_archived")
    if archived is not None and not isinstance(archived, bool):
        raise ApiError(400, "invalid_field", "is_archived must be a boolean")
    tags = body.get("tags")
    if tags is not None and (
        not isinstance(tags, list)
        or len(tags) > MAX_TAGS
        or not all(isinstance(t, str) and len(t) <= 64 for t in tags)
    ):
        raise ApiError(
            400, "invalid_field", f"tags must be a list of at most {MAX_TAGS} strings of <= 64 chars"
        )
    if title is None and archived is None and tags is None:
        raise ApiError(400, "missing_field", "nothing to change: give title, is_archived or tags")
    store = web_state(request).agent.store
    sid = request.path_params["id"]
    conv = await store.conversations.get(scope, sid)  # 404 before any change
    if title is not None:
        conv = await store.conversations.rename(scope, sid, title)
    if archived is not None:
        conv = await store.conversations.archive(scope, sid, archived)
    if tags is not None:
        conv = await store.conversations.tag(scope, sid, tags)
    return JSONResponse(conversation_view(conv))


async def delete_conversation(request: Request) -> Response:
    scope = caller_scope(request)
    # through the agent: a running turn of the conversation is stopped first, the active marker dropped
    await web_state(request).agent.delete_conversation(scope, request.path_params["id"])
    return Response(status_code=204)


async def list_messages(request: Request) -> Response:
    scope = caller_scope(request)
    limit, cursor = page_params(request, default=100)
    include_archived = bool_param(request, "include_archived", True) is True
    state = web_state(request)
    store = state.agent.store
    conv = await store.conversations.get(scope, request.path_params["id"])
    page = await store.messages.list(
        scope, conv.sid, limit=limit, cursor=cursor, include_archived=include_archived
    )

    def link(sid: str) -> str:
        return sign_link(state.link_key, scope, sid)

    return JSONResponse(
        {
            "items": [message_view(m, conv.clear_seq, link) for m in page.items],
            "next_cursor": page.next_cursor,
            "conversation": conversation_view(conv),
        }
    )


async def clear_conversation(request: Request) -> Response:
    scope = caller_scope(request)
    agent = web_state(request).agent
    await agent.store.conversations.get(scope, request.path_params["id"])  # 404 for foreign ids
    conv = await agent.conversations.clear(scope, request.path_params["id"])
    return JSONResponse(conversation_view(conv))


async def list_memories(request: Request) -> Response:
    scope = caller_scope(request)
    limit, cursor = page_params(request)
    page = await web_state(request).agent.store.memories.list(scope, limit=limit, cursor=cursor)
    return JSONResponse({"items": [memory_view(m) for m in page.items], "next_cursor": page.next_cursor})


async def get_memory(request: Request) -> Response:
    scope = caller_scope(request)
    mem = await web_state(request).agent.store.memories.get(scope, request.path_params["id"])
    return JSONResponse(memory_view(mem))


async def delete_memory(request: Request) -> Response:
    scope = caller_scope(request)
    await web_state(request).agent.store.memories.delete(scope, request.path_params["id"])
    return Response(status_code=204)


async def stats(request: Request) -> Response:
    scope = caller_scope(request)
    result = await web_state(request).agent.store.records.stats(scope)
    return JSONResponse({"context": scope.context, "user": scope.user_id, **stats_view(result)})


def _conversation_filter(request: Request) -> str | None:
    cid = request.query_params.get("conversation_id")
    if cid is not None and not re.fullmatch(r"[a-z0-9]{1,32}", cid):
        raise ApiError(400, "invalid_parameter", "invalid conversation_id")
    return cid


async def audit(request: Request) -> Response:
    scope = caller_scope(request)
    limit, cursor = page_params(request)
    page = await web_state(request).agent.store.records.list_audit(
        scope, limit=limit, cursor=cursor, conversation_id=_conversation_filter(request)
    )
    return JSONResponse({"items": [audit_view(a) for a in page.items], "next_cursor": page.next_cursor})


async def usage(request: Request) -> Response:
    """LLM calls newest first, and sums per model, per UTC day and per (day, model) for charts; all
    of them over ``since``/``until`` (ms since the epoch; ``until`` exclusive) when given."""
    scope = caller_scope(request)
    limit, cursor = page_params(request)
    period = period_params(request)
    store = web_state(request).agent.store
    page = await store.records.list_usage(
        scope, limit=limit, cursor=cursor, conversation_id=_conversation_filter(request), period=period
    )
    by_model = await store.records.usage_summary(scope, by="model", period=period)
    by_day = await store.records.usage_summary(scope, by="day", period=period)
    by_day_model = await store.records.usage_summary(scope, by="day_model", period=period)
    return JSONResponse(
        {
            "items": [usage_view(u) for u in page.items],
            "next_cursor": page.next_cursor,
            "since": period.since,
            "until": period.until,
            "summary": {
                "by_model": [aggregate_view(a) for a in by_model],
                "by_day": [aggregate_view(a) for a in by_day],
                "by_day_model": [day_model_view(a) for a in by_day_model],
            },
        }
    )


async def contexts(request: Request) -> Response:
    """The contexts in which the caller has conversations (never other users'), plus the default."""
    scope = caller_scope(request)
    agent = web_state(request).agent
    default = agent.settings.agent.default_context
    names = {default, scope.context}
    for name in await agent.store.engine.contexts():
        if await agent.store.engine.count(Kind.CONVERSATION, Scope(name, scope.user_id)) > 0:
            names.add(name)
    return JSONResponse({"default": default, "current": scope.context, "contexts": sorted(names)})


ROUTES = [
    Route("/api/conversations", list_conversations, methods=["GET"]),
    Route("/api/conversations", create_conversation, methods=["POST"]),
    Route("/api/conversations/{id}", get_conversation, methods=["GET"]),
    Route("/api/conversations/{id}", patch_conversation, methods=["PATCH"]),
    Route("/api/conversations/{id}", delete_conversation, methods=["DELETE"]),
    Route("/api/conversations/{id}/messages", list_messages, methods=["GET"]),
    Route("/api/conversations/{id}/clear", clear_conversation, methods=["POST"]),
    Route("/api/memories", list_memories, methods=["GET"]),
    Route("/api/memories/{id}", get_memory, methods=["GET"]),
    Route("/api/memories/{id}", delete_memory, methods=["DELETE"]),
    Route("/api/stats", stats, methods=["GET"]),
    Route("/api/audit", audit, methods=["GET"]),
    Route("/api/usage", usage, methods=["GET"]),
    Route("/api/contexts", contexts, methods=["GET"]),
]
