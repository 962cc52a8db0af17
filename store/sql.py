"""What the two SQL engines (embedded SQLite, postgres) share in translating a
:class:`~store.engine.ListQuery`: the WHERE clause under construction, field names, filter keys and
values, keyset cursors.

Only the dialect differs between the engines (the placeholder, how a field that is not a column is
read, how text is searched); that stays in ``store/sqlite/query.py`` and ``store/postgres/query.py``.
Paging is keyset paging: the cursor carries the last row's sort value and sid, so a page costs the
same at offset 0 and at offset 1M and nothing is skipped or repeated while rows arrive. A cursor is
the same text on both engines.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field

from store import jsontext
from store.engine import FILTER_OPS, ListQuery
from store.errors import InvalidInput
from store.models import JSON

_FIELD_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


@dataclass(slots=True)
class Where:
    """A WHERE clause under construction: fragments and their parameters, written with the engine's
    ``placeholder`` (``?`` for SQLite, ``%s`` for psycopg)."""

    placeholder: str
    where: list[str] = field(default_factory=list)
    params: list[object] = field(default_factory=list)

    def add(self, fragment: str, *params: object) -> None:
        self.where.append(fragment)
        self.params.extend(params)

    def clause(self) -> str:
        return " AND ".join(self.where) if self.where else "1 = 1"


def scoped(placeholder: str, context: str, user_id: str) -> Where:
    """The clause every read starts from: one user's records in one context."""
    return Where(placeholder, [f"context = {placeholder}", f"user_id = {placeholder}"], [context, user_id])


def field_name(name: str) -> str:
    """``name`` when it can be a record field (it is written into SQL text: nothing else gets there)."""
    if not isinstance(name, str) or not _FIELD_RE.match(name):
        raise InvalidInput(f"invalid field name {name!r}")
    return name


def parse_filter(key: str) -> tuple[str, str]:
    """The field and the operator of a filter key (``seq__gt``; a bare key means equality)."""
    name, _, op = key.partition("__")
    op = op or "eq"
    if op not in FILTER_OPS:
        raise InvalidInput(f"unknown filter operator {op!r} in {key!r}")
    return field_name(name), op


def in_values(key: str, value: JSON) -> list[JSON]:
    """The values of an ``in`` filter, which takes a list."""
    if not isinstance(value, list | tuple):
        raise InvalidInput(f"filter {key!r} needs a list")
    return list(value)


def plain_value(value: JSON) -> object:
    """A filter value as a column compares it: booleans are integers, lists/objects JSON text."""
    if isinstance(value, bool):
        return int(value)
    if value is None or isinstance(value, int | float | str):
        return value
    return dumps(value)


def dumps(value: JSON) -> str:
    """Compact JSON text, non-ASCII kept as is."""
    return jsontext.dumps(value, allow_nan=True)


def encode_cursor(order_value: object, sid: str) -> str:
    raw = json.dumps([order_value, sid], separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[object, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, sid = json.loads(raw)
        if not isinstance(sid, str) or isinstance(value, list | dict):
            raise ValueError
    except (ValueError, TypeError, UnicodeDecodeError):
        raise InvalidInput("invalid cursor") from None
    return value, sid


def add_cursor(where: Where, expr: str, query: ListQuery) -> None:
    """Resume after the cursor's row in the order ``expr, sid`` (a row comparison, so one index range)."""
    if query.cursor is None:
        return
    value, sid = decode_cursor(query.cursor)
    cmp = "<" if query.descending else ">"
    where.add(f"({expr}, sid) {cmp} ({where.placeholder}, {where.placeholder})", value, sid)
