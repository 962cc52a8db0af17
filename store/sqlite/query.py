"""Translate :class:`~store.engine.ListQuery` into SQL for the embedded engine.

Filters on hot columns hit indexes; any other field is read with ``json_extract`` from the stored
record. What the postgres engine shares (the clause under construction, filter keys, cursors) is in
:mod:`store.sql`.
"""

from __future__ import annotations

from store.engine import ListQuery
from store.models import JSON
from store.search import search_words
from store.sql import Where, field_name, in_values, parse_filter, plain_value
from store.sqlite.schema import KindTable

_SQL_OPS = {"eq": "=", "ne": "IS NOT", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def column(spec: KindTable, name: str) -> str:
    """The SQL expression of a record field: its hot column, or a JSON lookup."""
    if field_name(name) in spec.hot_names:
        return name
    return f"json_extract(data, '$.{name}')"


def add_filters(spec: KindTable, sql: Where, filters: dict[str, JSON]) -> None:
    for key, value in filters.items():
        name, op = parse_filter(key)
        col = column(spec, name)
        if op == "in":
            values = in_values(key, value)
            if not values:
                sql.add("0")
                continue
            sql.add(f"{col} IN ({', '.join('?' * len(values))})", *(plain_value(v) for v in values))
        elif value is None and op in ("eq", "ne"):
            sql.add(f"{col} IS {'NOT ' if op == 'ne' else ''}NULL")
        else:
            sql.add(f"{col} {_SQL_OPS[op]} ?", plain_value(value))


def order_expr(spec: KindTable, query: ListQuery) -> str:
    col = column(spec, query.order_by)
    # a missing JSON field sorts as "" so that keyset comparisons never meet NULL
    return col if col == query.order_by else f"coalesce({col}, '')"


def fts_query(text: str) -> str | None:
    """Any word of ``text`` (each quoted, so FTS5 syntax in user input is inert); None when no words."""
    words = search_words(text)
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
