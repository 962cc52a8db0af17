"""JSON views of store objects and request-field checks shared by the routes.

The field names here are the public API (documented in ``openapi.py`` and ``docs/web.md``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from channels.web.errors import ApiError
from channels.web.openapi_schemas import MAX_TIME_MS
from store import Aggregate, AuditEntry, Conversation, Memory, Message, ScopeStats, TimeRange, UsageEntry

MAX_PAGE = 200


def conversation_view(c: Conversation) -> dict[str, Any]:
    return {
        "id": c.sid,
        "title": c.title,
        "message_count": c.message_count,
        "is_archived": c.is_archived,
        "tags": list(c.tags),
        "last_channel": c.last_channel,
        "cleared_through_seq": c.clear_seq,
        "model": c.model,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    }


def message_view(m: Message, clear_seq: int, link: Callable[[str], str] | None = None) -> dict[str, Any]:
    """A message as the API shows it; ``link`` makes the URL of an image attachment (by sid)."""
    try:
        calls = json.loads(m.tool_calls) if m.tool_calls else []
    except ValueError:
        calls = []
    return {
        "id": m.sid,
        "conversation_id": m.conversation_id,
        "seq": m.seq,
        "role": m.role,
        "content": m.content,
        "channel": m.channel,
        "status": m.status,
        "timestamp": m.timestamp,
        "tool_calls": calls if isinstance(calls, list) else [],
        "tool_call_id": m.tool_call_id,
        "name": m.name,
        "sender": m.sender,
        "model": m.model,
        "prompt_tokens": m.prompt_tokens,
        "completion_tokens": m.completion_tokens,
        "message_type": m.message_type,
        # a tool result: how long the tool ran (ms), None when not recorded (older messages)
        "duration_ms": _duration(m),
        # behind the /clear boundary: stored, shown dimmed, never sent to the model again
        "archived": m.seq <= clear_seq,
        # images (with a URL for the page) and a voice note's type, size and duration
        "attachments": attachments_view(m, link),
        "turn_id": m.turn_id,
        # replaced by a retry, regenerate or edit (agent/rerun.py): the page shows it collapsed
        "superseded_by": m.superseded_by,
    }


def attachments_view(m: Message, link: Callable[[str], str] | None) -> list[dict[str, Any]]:
    try:
        items = json.loads(m.attachments) if m.attachments else []
    except ValueError:
        items = []
    out: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        view = dict(item)
        if item.get("kind") == "image" and isinstance(item.get("id"), str):
            view["url"] = link(item["id"]) if link is not None else f"/api/attachments/{item['id']}"
        out.append(view)
    return out


def _duration(m: Message) -> float | None:
    value = m.extra.get("duration_ms")
    if m.role != "tool" or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def memory_view(m: Memory) -> dict[str, Any]:
    return {
        "id": m.sid,
        "content": m.content,
        "kind": m.kind,
        "source_conversation_id": m.source_conversation_id,
        "source_channel": m.source_channel,
        "created_at": m.created_at,
    }


def audit_view(a: AuditEntry) -> dict[str, Any]:
    return {
        "id": a.sid,
        "tool": a.tool,
        "arguments": a.arguments,
        "result_summary": a.result_summary,
        "ok": a.ok,
        "error": a.error,
        "duration_ms": a.duration_ms,
        "conversation_id": a.conversation_id,
        "channel": a.channel,
        "created_at": a.created_at,
    }


def usage_view(u: UsageEntry) -> dict[str, Any]:
    return {
        "id": u.sid,
        "provider": u.provider,
        "model": u.model,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "latency_ms": u.latency_ms,
        "conversation_id": u.conversation_id,
        "channel": u.channel,
        "ok": u.ok,
        "created_at": u.created_at,
    }


def aggregate_view(a: Aggregate) -> dict[str, Any]:
    return {
        "key": a.key,
        "count": a.count,
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "errors": a.errors,
        "total_ms": a.total_ms,
    }


def day_model_view(a: Aggregate) -> dict[str, Any]:
    """One model's usage on one UTC day (``avg_ms``: mean latency of its calls)."""
    return {
        "day": a.day,
        "model": a.model,
        "count": a.count,
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "errors": a.errors,
        "total_ms": a.total_ms,
        "avg_ms": round(a.total_ms / a.count, 3) if a.count else 0.0,
    }


def stats_view(s: ScopeStats) -> dict[str, Any]:
    return {
        "conversations": s.conversations,
        "archived_conversations": s.archived_conversations,
        "messages": s.messages,
        "memories": s.memories,
        "tool_calls": s.tool_calls,
        "llm_calls": s.llm_calls,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
    }


# -- request fields ----------------------------------------------------------------------------


def page_params(request: Request, default: int = 50) -> tuple[int, str | None]:
    """``limit`` (1..200) and the opaque ``cursor`` of the previous page."""
    raw = request.query_params.get("limit")
    limit = default
    if raw is not None:
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
            raise ApiError(400, "invalid_limit", f"limit must be an integer between 1 and {MAX_PAGE}")
        limit = int(raw)
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and (len(cursor) > 512 or not cursor.isprintable()):
        raise ApiError(400, "invalid_cursor", "invalid cursor")
    return limit, cursor


#: a search text: at most this many characters
MAX_SEARCH_CHARS = 200


def search_param(request: Request) -> str | None:
    """``q``: the words to look for (None when absent or blank)."""
    raw = request.query_params.get("q")
    if raw is None or not raw.strip():
        return None
    if len(raw) > MAX_SEARCH_CHARS or not raw.isprintable():
        raise ApiError(
            400, "invalid_parameter", f"q must be printable text of at most {MAX_SEARCH_CHARS} characters"
        )
    return raw


def _time_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_TIME_MS:
        raise ApiError(400, "invalid_parameter", f"{name} must be a time in milliseconds since the epoch")
    return int(raw)


def period_params(request: Request) -> TimeRange:
    """``since`` (inclusive) and ``until`` (exclusive), in ms since the epoch; either may be absent."""
    since, until = _time_param(request, "since"), _time_param(request, "until")
    if since is not None and until is not None and until <= since:
        raise ApiError(400, "invalid_parameter", "until must be after since")
    return TimeRange(since, until)


def bool_param(request: Request, name: str, default: bool | None, *, allow_all: bool = False) -> bool | None:
    """``true`` / ``false`` (and ``all`` -> None when ``allow_all``); anything else is a 400."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw == "true":
        return True
    if raw == "false":
        return False
    if allow_all and raw == "all":
        return None
    choices = "true, false or all" if allow_all else "true or false"
    raise ApiError(400, "invalid_parameter", f"{name} must be {choices}")


def only_keys(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed - {"context_name"})
    if unknown:
        raise ApiError(400, "invalid_field", f"unknown field {unknown[0]!r}")


def str_field(
    body: dict[str, Any], name: str, *, required: bool = False, max_len: int = 100_000
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, "missing_field", f"{name} is required")
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"{name} must be a string")
    if len(value) > max_len:
        raise ApiError(400, "invalid_field", f"{name} is longer than {max_len} characters")
    return value
