"""Translate :class:`~store.engine.ListQuery` filters, sort orders and text searches into PostgreSQL.

Columns (the common ones, a kind's hot and owned columns) are compared directly and served by indexes;
any other field is read from the record's JSON text. Text compares bytewise (``COLLATE "C"``), as on
SQLite. Cursors are the embedded engine's (keyset: the last row's sort value and sid).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from store.engine import FILTER_OPS, ListQuery
from store.errors import InvalidInput
from store.models import JSON
from store.postgres.schema import PgTable
from store.search import search_words
from store.sqlite.query import decode_cursor

_FIELD_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
_OPS = {"eq": "=", "ne": "IS DISTINCT FROM", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_COMMON = ("sid", "context", "user_id", "created_at", "updated_at")


@dataclass(slots=True)
class Where:
    """A WHERE clause under construction: fragments and their parameters (``%s`` placeholders)."""

    where: list[str]
    params: list[object] = field(default_factory=list)

    def add(self, fragment: str, *params: object) -> None:
        self.where.append(fragment)
        self.params.extend(params)

    def clause(self) -> str:
        return " AND ".join(self.where) if self.where else "true"


def scoped(context: str, user_id: str) -> Where:
    return Where(["context = %s", "user_id = %s"], [context, user_id])


def _name(name: str) -> str:
    if not isinstance(name, str) or not _FIELD_RE.match(name):
        raise InvalidInput(f"invalid field name {name!r}")
    return name


def _column(spec: PgTable, name: str) -> str | None:
    """The column holding field ``name``, or None when it lives in the JSON only."""
    if name in _COMMON or name in spec.hot_names:
        return name
    if name == "last_channel" and "last_channel" in spec.owned_names:
        return "coalesce(last_channel, data::json->>'last_channel')"
    if name in spec.owned_names:
        return name
    return None


def _json_text(name: str) -> str:
    return f"(data::json->>'{name}')"


def _json_value(name: str) -> str:
    return f"(data::json->'{name}')::jsonb"


def add_filters(spec: PgTable, where: Where, filters: dict[str, JSON]) -> None:
    for key, value in filters.items():
        name, _, op = key.partition("__")
        op = op or "eq"
        if op not in FILTER_OPS:
            raise InvalidInput(f"unknown filter operator {op!r} in {key!r}")
        col = _column(spec, _name(name))
        if op == "in":
            if not isinstance(value, list | tuple):
                raise InvalidInput(f"filter {key!r} needs a list")
            if not value:
                where.add("false")
            elif col is not None:
                where.add(f"{col} IN ({', '.join(['%s'] * len(value))})", *(_plain(v) for v in value))
            else:
                where.add(
                    f"{_json_value(name)} IN ({', '.join(['%s::jsonb'] * len(value))})",
                    *(_dumps(v) for v in value),
                )
        elif value is None and op in ("eq", "ne"):
            target = col if col is not None else _json_text(name)
            where.add(f"{target} IS {'NOT ' if op == 'ne' else ''}NULL")
        elif col is not None:
            where.add(f"{col} {_OPS[op]} %s", _plain(value))
        elif isinstance(value, str):
            where.add(f'{_json_text(name)} COLLATE "C" {_OPS[op]} %s', value)
        else:
            where.add(f"{_json_value(name)} {_OPS[op]} %s::jsonb", _dumps(value))


def _plain(value: JSON) -> object:
    """A filter value for a column: booleans are integers (as on SQLite), lists/objects JSON text."""
    if isinstance(value, bool):
        return int(value)
    if value is None or isinstance(value, int | float | str):
        return value
    return _dumps(value)


def _dumps(value: JSON) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def order_expr(spec: PgTable, query: ListQuery) -> str:
    col = _column(spec, _name(query.order_by))
    if col is None:
        # a missing JSON field sorts as "" so that keyset comparisons never meet NULL
        return f"coalesce({_json_text(query.order_by)}, '') COLLATE \"C\""
    if col == "message_count":
        return "coalesce(message_count, 0)"
    if col.startswith("coalesce("):
        return f"coalesce({col}, '')"
    return col


def add_cursor(where: Where, expr: str, query: ListQuery) -> None:
    if query.cursor is None:
        return
    value, sid = decode_cursor(query.cursor)
    cmp = "<" if query.descending else ">"
    where.add(f"({expr}, sid) {cmp} (%s, %s)", value, sid)


def ts_query(text: str) -> str | None:
    """Any word of ``text`` as a ``to_tsquery`` text (each word quoted: query syntax is inert)."""
    words = search_words(text)
    if not words:
        return None
    return " | ".join("'" + w.replace("\\", "\\\\").replace("'", "''") + "'" for w in words)
