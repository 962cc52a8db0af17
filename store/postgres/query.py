"""Translate :class:`~store.engine.ListQuery` filters, sort orders and text searches into PostgreSQL.

Columns (the common ones, a kind's hot and owned columns) are compared directly and served by indexes;
any other field is read from the record's JSON text. Text compares bytewise (``COLLATE "C"``), as on
SQLite. The clause under construction, filter keys and cursors are the ones both SQL engines share
(:mod:`store.sql`).
"""

from __future__ import annotations

from store.engine import ListQuery
from store.models import JSON
from store.postgres.schema import PgTable
from store.search import search_words
from store.sql import Where, dumps, field_name, in_values, parse_filter, plain_value

_OPS = {"eq": "=", "ne": "IS DISTINCT FROM", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_COMMON = ("sid", "context", "user_id", "created_at", "updated_at")


def scoped(context: str, user_id: str) -> Where:
    return Where("%s", ["context = %s", "user_id = %s"], [context, user_id])


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
        name, op = parse_filter(key)
        col = _column(spec, name)
        if op == "in":
            values = in_values(key, value)
            if not values:
                where.add("false")
            elif col is not None:
                where.add(f"{col} IN ({', '.join(['%s'] * len(values))})", *(plain_value(v) for v in values))
            else:
                where.add(
                    f"{_json_value(name)} IN ({', '.join(['%s::jsonb'] * len(values))})",
                    *(dumps(v) for v in values),
                )
        elif value is None and op in ("eq", "ne"):
            target = col if col is not None else _json_text(name)
            where.add(f"{target} IS {'NOT ' if op == 'ne' else ''}NULL")
        elif col is not None:
            where.add(f"{col} {_OPS[op]} %s", plain_value(value))
        elif isinstance(value, str):
            where.add(f'{_json_text(name)} COLLATE "C" {_OPS[op]} %s', value)
        else:
            where.add(f"{_json_value(name)} {_OPS[op]} %s::jsonb", dumps(value))


def order_expr(spec: PgTable, query: ListQuery) -> str:
    col = _column(spec, field_name(query.order_by))
    if col is None:
        # a missing JSON field sorts as "" so that keyset comparisons never meet NULL
        return f"coalesce({_json_text(query.order_by)}, '') COLLATE \"C\""
    if col == "message_count":
        return "coalesce(message_count, 0)"
    if col.startswith("coalesce("):
        return f"coalesce({col}, '')"
    return col


def ts_query(text: str) -> str | None:
    """Any word of ``text`` as a ``to_tsquery`` text (each word quoted: query syntax is inert)."""
    words = search_words(text)
    if not words:
        return None
    return " | ".join("'" + w.replace("\\", "\\\\").replace("'", "''") + "'" for w in words)
