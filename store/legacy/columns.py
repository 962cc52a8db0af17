"""Lenient column matching for the legacy SQLite import (SPEC 7.4; the alias table is in docs/osis.md).

Each target field lists the legacy column names it accepts, first match wins (case-insensitive, a
column is used once). Columns no field claims go to ``legacy``. Timestamps may be ISO-8601 text or
numbers in seconds or milliseconds.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any, Final

from store.models import Record

TABLES: Final = ("conversations", "messages", "memories", "audit_log", "usage_log")
_TIME = ("created_at", "timestamp", "ts", "time", "date", "created", "sent_at", "datetime")
_CONV = ("conversation_id", "conv_id", "chat_id", "session_id", "thread_id", "conversation")

#: table -> target field -> accepted legacy column names (lower case), in preference order
ALIASES: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "conversations": {
        "id": ("id", "conversation_id", "conv_id", "chat_id", "session_id", "uuid"),
        "title": ("title", "name", "subject", "topic"),
        "created": _TIME,
        "is_archived": ("is_archived", "archived"),
        "tags": ("tags", "labels"),
        "last_channel": ("last_channel", "channel", "source", "platform"),
    },
    "messages": {
        "id": ("id", "message_id", "msg_id", "uuid"),
        "conversation_id": _CONV,
        "role": ("role", "sender_role", "author_role", "speaker", "from_role"),
        "content": ("content", "text", "body", "message", "msg"),
        "created": _TIME,
        "channel": ("channel", "source", "platform"),
        "tool_calls": ("tool_calls", "function_call", "tool_calls_json"),
        "tool_call_id": ("tool_call_id",),
        "name": ("name", "tool_name"),
        "sender": ("sender", "sender_name", "username", "author"),
        "model": ("model", "model_name"),
        "prompt_tokens": ("prompt_tokens", "input_tokens", "tokens_in"),
        "completion_tokens": ("completion_tokens", "output_tokens", "tokens_out"),
    },
    "memories": {
        "id": ("id", "memory_id", "uuid"),
        "content": ("content", "text", "memory", "fact", "body", "value"),
        "kind": ("kind", "type", "category"),
        "source_conversation_id": ("source_conversation_id", *_CONV),
        "source_channel": ("source_channel", "channel", "source"),
        "created": _TIME,
    },
    "audit_log": {
        "id": ("id", "audit_id", "entry_id", "uuid"),
        "tool": ("tool", "tool_name", "name", "function", "action"),
        "arguments": ("arguments", "args", "input", "params", "parameters"),
        "result_summary": ("result_summary", "result", "output", "response", "summary"),
        "ok": ("ok", "success", "succeeded", "status"),
        "error": ("error", "error_message", "err"),
        "duration_ms": ("duration_ms", "duration", "latency_ms", "elapsed_ms"),
        "conversation_id": _CONV,
        "channel": ("channel", "source", "platform"),
        "created": _TIME,
    },
    "usage_log": {
        "id": ("id", "usage_id", "entry_id", "uuid"),
        "provider": ("provider", "vendor", "api"),
        "model": ("model", "model_name"),
        "prompt_tokens": ("prompt_tokens", "input_tokens", "tokens_in", "prompt"),
        "completion_tokens": ("completion_tokens", "output_tokens", "tokens_out", "completion"),
        "latency_ms": ("latency_ms", "duration_ms", "latency", "elapsed_ms"),
        "conversation_id": _CONV,
        "channel": ("channel", "source", "platform"),
        "ok": ("ok", "success", "status"),
        "created": _TIME,
    },
}
_ROLES: Final = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
}
_INT_FIELDS: Final = frozenset({"prompt_tokens", "completion_tokens"})
_FLOAT_FIELDS: Final = frozenset({"duration_ms", "latency_ms"})
_TEXT_FIELDS: Final = frozenset(
    {
        "title",
        "content",
        "channel",
        "last_channel",
        "tool_call_id",
        "name",
        "sender",
        "model",
        "kind",
        "source_channel",
        "tool",
        "arguments",
        "result_summary",
        "error",
        "provider",
        "tool_calls",
    }
)
_NO_TIME: Final = 2**62
#: the legacy columns that name a row's user (case-insensitive, first match wins); the column stays in
#: the record's ``legacy`` object too, as it was
USER_COLUMNS: Final = ("user_id", "user", "owner", "owner_id", "uid", "account")


class RowError(Exception):
    """A legacy row that cannot be mapped; the message is the skip reason."""


def map_row(table: str, raw: dict[str, Any]) -> tuple[str, Record, tuple[int, int, str]]:
    """``(legacy id, fields for the engine, sort key)`` of one legacy row."""
    aliases = ALIASES[table]
    by_lower = {k.lower(): k for k in raw if k != "__rowid__"}
    used: set[str] = set()
    found: dict[str, Any] = {}
    for target, names in aliases.items():
        for name in names:
            col = by_lower.get(name)
            if col is not None and col not in used:
                used.add(col)
                found[target] = raw[col]
                break
    legacy = {col: _jsonable(raw[col]) for col in by_lower.values() if col not in used}
    legacy_id = found.pop("id", None)
    if legacy_id in (None, ""):
        legacy_id = raw.get("__rowid__")
        if legacy_id is None:
            raise RowError("no id")
    legacy_id = str(legacy_id)
    created_raw = found.pop("created", None)
    created = parse_time(created_raw)
    if created_raw not in (None, ""):
        legacy["created_at"] = _jsonable(created_raw)
    fields: Record = {"legacy": legacy}
    for target, value in found.items():
        fields[target] = _convert(target, value)
    _finish(table, fields, created)
    num = int(legacy_id) if legacy_id.isdigit() else 0
    return legacy_id, fields, (created if created is not None else _NO_TIME, num, legacy_id)


def row_user(raw: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(column, user)`` of a legacy row's user column; ``(None, None)`` without one, ``(column,
    None)`` when it is empty. Numbers become their text (``42`` -> ``"42"``)."""
    by_lower = {k.lower(): k for k in raw if k != "__rowid__"}
    for name in USER_COLUMNS:
        col = by_lower.get(name)
        if col is None:
            continue
        value = _jsonable(raw[col])
        if value is None or isinstance(value, dict) or not str(value).strip():
            return col, None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return col, str(value).strip()
    return None, None


def _finish(table: str, fields: Record, created: int | None) -> None:
    if table == "messages":
        role = _ROLES.get(str(fields.get("role") or "").strip().lower())
        if role is None:
            raise RowError("unknown role")
        fields["role"] = role
        if fields.get("conversation_id") in (None, ""):
            raise RowError("no conversation")
        if not fields.get("content") and not fields.get("tool_calls"):
            raise RowError("no content")
        fields.setdefault("content", "")
        fields["channel"] = fields.get("channel") or "legacy"
        fields["timestamp"] = created or 0
        fields["status"] = "complete"
    elif table == "memories":
        content = str(fields.get("content") or "").strip()
        if not content:
            raise RowError("no content")
        fields["content"] = content
        fields["kind"] = fields.get("kind") or "fact"
    elif table == "conversations":
        fields["title"] = str(fields.get("title") or "").strip()[:200]
        fields["is_archived"] = _truthy(fields.get("is_archived", False))
        fields["tags"] = _tags(fields.get("tags"))
    elif table in ("audit_log", "usage_log"):
        if "ok" in fields:
            fields["ok"] = _truthy(fields["ok"])
        if table == "audit_log" and not fields.get("tool"):
            raise RowError("no tool")
    for text_field in ("content", "title"):
        if "\x00" in str(fields.get(text_field, "")):
            raise RowError("NUL character in text")


def _convert(target: str, value: Any) -> Any:
    if target in _INT_FIELDS:
        try:
            return int(value or 0)
        except (TypeError, ValueError):
            raise RowError(f"bad {target}") from None
    if target in _FLOAT_FIELDS:
        try:
            return float(value or 0)
        except (TypeError, ValueError):
            raise RowError(f"bad {target}") from None
    if target in _TEXT_FIELDS:
        if value is None:
            return ""
        if target in ("arguments", "tool_calls") and not isinstance(value, str):
            return json.dumps(_jsonable(value))
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise RowError(f"binary {target}") from None
        return str(value)
    return _jsonable(value)


def parse_time(value: Any) -> int | None:
    """ms since the epoch from ISO text or seconds/ms numbers; None when it is not a time."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            return int(dt.timestamp() * 1000)
    if isinstance(value, (int, float)):
        # below 1e11 it is seconds (1e11 s is the year 5138), above it ms
        return int(value * 1000) if abs(value) < 1e11 else int(value)
    return None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y", "t", "ok", "success", "archived")
    return bool(value)


def _tags(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value.split(",")
        if isinstance(parsed, list):
            return [str(t).strip()[:64] for t in parsed if str(t).strip()][:32]
    return [str(value).strip()[:64]]


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    return value
