"""Core mode's queries on the client (:mod:`store.osis.core`): which filters a generated server can
apply (plain equality on a declared scalar field), the rest of a :class:`~store.engine.ListQuery`
(operators, order, keyset cursors) over the records read, and the seq range a message list needs."""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Final

from store.engine import ListQuery
from store.errors import InvalidInput
from store.models import Kind, Record
from store.osis.oschema import fields_of, type_ok

_OPS: Final = ("eq", "ne", "gt", "gte", "lt", "lte", "in")
_WORD_RE: Final = re.compile(r"\w+", re.UNICODE)


def pushed(kind: Kind, filters: dict[str, Any]) -> dict[str, Any]:
    """The filters the server can apply: equality on a declared scalar field."""
    declared = fields_of(kind)
    out: dict[str, Any] = {}
    for key, want in filters.items():
        name = key[: -len("__eq")] if key.endswith("__eq") else key
        field = declared.get(name)
        if (
            "__" not in name
            and field is not None
            and not field.type.startswith("[")
            and type_ok(field.type, want)
        ):
            out[name] = want
    return out


def seq_bounds(filters: dict[str, Any]) -> tuple[int | None, int | None]:
    """The seq range the filters allow (for picking message blocks)."""
    low: int | None = None
    high: int | None = None
    for key, want in filters.items():
        if not key.startswith("seq") or isinstance(want, bool) or not isinstance(want, int):
            continue
        op = key.partition("__")[2] or "eq"
        if op in ("eq", "gte", "gt"):
            low = max(low or 0, want + (1 if op == "gt" else 0))
        if op in ("eq", "lte", "lt"):
            bound = want - (1 if op == "lt" else 0)
            high = bound if high is None else min(high, bound)
    return low, high


def matches(rec: Record, key: str, want: Any) -> bool:
    name, _, op = key.partition("__")
    if op and op not in _OPS:
        raise InvalidInput(f"unknown filter operator {op!r}")
    have = rec.get(name)
    if op in ("", "eq"):
        return bool(have == want)
    if op == "ne":
        return bool(have != want)
    if op == "in":
        return isinstance(want, list) and have in want
    if have is None:
        return False
    try:
        if op == "gt":
            return bool(have > want)
        if op == "gte":
            return bool(have >= want)
        if op == "lt":
            return bool(have < want)
        return bool(have <= want)
    except TypeError:
        return False


def sort_key(value: Any) -> tuple[int, Any]:
    """Sortable across types: None first, then numbers, then text."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value))


def encode_cursor(rec: Record, order_by: str) -> str:
    raw = json.dumps([sort_key(rec.get(order_by)), str(rec["sid"])])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[tuple[int, Any], str]:
    try:
        value, sid = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return (int(value[0]), value[1]), str(sid)
    except (ValueError, TypeError, IndexError):
        raise InvalidInput("invalid cursor") from None


def beyond(key: tuple[tuple[int, Any], str], after: tuple[tuple[int, Any], str], query: ListQuery) -> bool:
    return key < after if query.descending else key > after


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text)
