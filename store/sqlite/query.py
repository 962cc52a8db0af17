"""Translate :class:`~store.engine.ListQuery` into SQL for the embedded engine.

Filters on hot columns hit indexes; any other field is read with ``json_extract`` from the stored
record. Paging is keyset paging: the cursor carries the last row's sort value and sid, so a page
costs the same at offset 0 and at offset 1M and nothing is skipped or repeated while rows arrive.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

from store.engine import FILTER_OPS, MAX_LIMIT, ListQuery
from store.errors import InvalidInput
from store.models import JSON
from store.search import search_words
from store.sqlite.schema import KindTable

_FIELD_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
_SQL_OPS = {"eq": "=", "ne": "IS NOT", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass(slots=True)
class SQL:
    """A WHERE clause under construction: text fragments and their parameters."""

    where: list[str]
    params: list[object]

    def add(self, fragment: str, *params: object) -> None:
        self.where.append(fragment)
        self.params.extend(params)

    def clause(self) -> str:
        return " AND ".join(self.where) if self.where else "1"


def column(spec: KindTable, name: str) -> str:
    """The SQL expression of a record field: its hot column, or a JSON lookup."""
    if not isinstance(name, str) or not _FIELD_RE.match(name):
        raise InvalidInput(f"invalid field name {name!r}")
    if name in spec.hot_names:
        return name
    return f"json_extract(data, '$.{name}')"


def sql_value(value: JSON) -> object:
    """A JSON filter value as SQLite sees it (booleans are integers, lists/objects JSON text)."""
    if isinstance(value, bool):
        return int(value)
    if value is None or isinstance(value, int | float | str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def add_filters(spec: KindTable, sql: SQL, filters: dict[str, JSON]) -> None:
    for key, value in filters.items():
        name, _, op = key.partition("__")
        op = op or "eq"
        if op not in FILTER_OPS:
            raise InvalidInput(f"unknown filter operator {op!r} in {key!r}")
        col = column(spec, name)
        if op == "in":
            if not isinstance(value, list | tuple):
                raise InvalidInput(f"filter {key!r} needs a list")
            if not value:
                sql.add("0")
                continue
            sql.add(f"{col} IN ({', '.join('?' * len(value))})", *(sql_value(v) for v in value))
        elif value is None and op in ("eq", "ne"):
            sql.add(f"{col} IS {'NOT ' if op == 'ne' else ''}NULL")
        else:
            sql.add(f"{col} {_SQL_OPS[op]} ?", sql_value(value))


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


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


def order_expr(spec: KindTable, query: ListQuery) -> str:
    col = column(spec, query.order_by)
    # a missing JSON field sorts as "" so that keyset comparisons never meet NULL
    return col if col == query.order_by else f"coalesce({col}, '')"


def add_cursor(sql: SQL, expr: str, query: ListQuery) -> None:
    if query.cursor is None:
        return
    value, sid = decode_cursor(query.cursor)
    cmp = "<" if query.descending else ">"
    sql.add(f"({expr}, sid) {cmp} (?, ?)", value, sid)


def fts_query(text: str) -> str | None:
    """Any word of ``text`` (each quoted, so FTS5 syntax in user input is inert); None when no words."""
    words = search_words(text)
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
