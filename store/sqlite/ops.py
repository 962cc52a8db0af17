"""The embedded engine's operations as plain blocking functions on one ``sqlite3.Connection``.

They run on the engine's worker thread only (see :mod:`store.sqlite.engine`), never on the event loop.
Every write is one ``BEGIN IMMEDIATE`` transaction: the write lock is taken up front, so two processes
never both read ``max(seq)`` and then race to insert; the loser waits (``busy_timeout``) and then sees
the winner's row.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from store import jsontext, restore
from store.engine import ListQuery, Page, check_limit
from store.errors import InvalidInput, NotFound
from store.models import (
    BASE_FIELDS,
    JSON,
    Kind,
    Record,
    Scope,
)
from store.sql import Where, add_cursor, encode_cursor, scoped
from store.sqlite.query import add_filters, fts_query, order_expr
from store.sqlite.schema import CASCADE_TABLES, TABLES, KindTable

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
SID_WIDTH = 4
#: fields the store maintains itself besides BASE_FIELDS; ``update`` ignores them
_OWNED: dict[Kind, frozenset[str]] = {
    Kind.MESSAGE: frozenset({"seq", "conversation_id"}),
    Kind.CONVERSATION: frozenset({"message_count"}),
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            return out.rjust(SID_WIDTH, "0")


@contextmanager
def write_txn(conn: sqlite3.Connection) -> Iterator[None]:
    """One ``BEGIN IMMEDIATE`` transaction; inside a :func:`batch` it is the batch's (nothing to do)."""
    nested = conn.in_transaction
    if nested:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _hot_values(spec: KindTable, rec: Record) -> list[object]:
    """Values of the kind's extra hot columns, type-checked so that column and JSON never disagree."""
    out: list[object] = []
    for name, sqltype in spec.hot:
        value = rec.get(name)
        if sqltype == "TEXT":
            value = "" if value is None else value
            if not isinstance(value, str):
                raise InvalidInput(f"field {name!r} must be text")
        elif name == "is_archived":
            if not isinstance(value, bool | None):
                raise InvalidInput(f"field {name!r} must be true or false")
            value = int(bool(value))
        elif not isinstance(value, int) or isinstance(value, bool):
            raise InvalidInput(f"field {name!r} must be an integer")
        out.append(value)
    return out


def _insert(conn: sqlite3.Connection, spec: KindTable, rec: Record, request_key: str | None) -> None:
    cols = (*spec.hot_names, "request_key", "data")
    values = [rec["sid"], rec["context"], rec["user_id"], rec["created_at"], rec["updated_at"]]
    values += [*_hot_values(spec, rec), request_key, jsontext.record_text(rec)]
    conn.execute(
        f"INSERT INTO {spec.table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", values
    )


def _rewrite(conn: sqlite3.Connection, spec: KindTable, row_id: int, rec: Record) -> None:
    names = spec.hot_names[3:]  # created_at onward: sid and scope never change
    sets = ", ".join(f"{n} = ?" for n in (*names, "data"))
    data = jsontext.record_text(rec)
    values = [rec["created_at"], rec["updated_at"], *_hot_values(spec, rec), data, row_id]
    conn.execute(f"UPDATE {spec.table} SET {sets} WHERE id = ?", values)


def _find(conn: sqlite3.Connection, spec: KindTable, scope: Scope, sid: str) -> tuple[int, Record] | None:
    row = conn.execute(
        f"SELECT id, data FROM {spec.table} WHERE context = ? AND sid = ? AND user_id = ?",
        (scope.context, sid, scope.user_id),
    ).fetchone()
    return (row[0], jsontext.loads(row[1])) if row else None


def _insert_new(conn: sqlite3.Connection, kind: Kind, rec: Record, request_key: str | None) -> Record:
    """Insert ``rec`` under the next sid of the kind's counter (set in ``rec``). A restored record may
    hold a sid the counter never produced in this exact spelling: the insert then fails on the
    ``(context, sid)`` index, which only undoes that statement, and the next number is tried. No
    lookup runs before the insert: a statement less per new record."""
    spec = TABLES[kind]
    while True:
        (n,) = conn.execute(
            "INSERT INTO counters (context, kind, last) VALUES (?, ?, 1) "
            "ON CONFLICT (context, kind) DO UPDATE SET last = last + 1 RETURNING last",
            (rec["context"], kind.value),
        ).fetchone()
        rec["sid"] = to_base36(n)
        try:
            _insert(conn, spec, rec, request_key)
        except sqlite3.IntegrityError as exc:
            if not _sid_taken(spec, exc):
                raise
            continue
        return rec


def _sid_taken(spec: KindTable, exc: sqlite3.IntegrityError) -> bool:
    """The failed insert met a record holding the same sid (and not another unique key)."""
    return str(exc).endswith(f"{spec.table}.context, {spec.table}.sid")


def _sid_number(sid: str) -> int:
    """The counter value a sid stands for (0 for sids too long to ever come out of the counter)."""
    return int(sid, 36) if len(sid) <= 12 else 0


def get(conn: sqlite3.Connection, kind: Kind, scope: Scope, sid: str) -> Record | None:
    found = _find(conn, TABLES[kind], scope, sid)
    return found[1] if found else None


def create(
    conn: sqlite3.Connection, kind: Kind, scope: Scope, fields: Record, request_key: str | None
) -> Record:
    spec = TABLES[kind]
    with write_txn(conn):
        if request_key is not None:
            row = conn.execute(
                f"SELECT data FROM {spec.table} WHERE context = ? AND user_id = ? AND request_key = ?",
                (scope.context, scope.user_id, request_key),
            ).fetchone()
            if row:
                rec: Record = jsontext.loads(row[0])
                return rec
        now = now_ms()
        body = {k: v for k, v in fields.items() if k not in BASE_FIELDS}
        if kind is Kind.MESSAGE:
            body["seq"] = _next_seq(conn, scope, body, now)
        rec = {
            "sid": "",
            "context": scope.context,
            "user_id": scope.user_id,
            "created_at": now,
            "updated_at": now,
            **body,
        }
        return _insert_new(conn, kind, rec, request_key)


def _next_seq(conn: sqlite3.Connection, scope: Scope, body: Record, now: int) -> int:
    """The message's seq, and the conversation touched -- inside the caller's write transaction."""
    conv_id = body.get("conversation_id")
    if not isinstance(conv_id, str):
        raise InvalidInput("a message needs a conversation_id")
    conv_spec = TABLES[Kind.CONVERSATION]
    # the conversation and its last seq in one statement
    row = conn.execute(
        f"SELECT id, data, (SELECT max(seq) FROM messages WHERE context = ?1 AND user_id = ?2 "
        f"AND conversation_id = ?3) FROM {conv_spec.table} WHERE context = ?1 AND sid = ?3 AND user_id = ?2",
        (scope.context, scope.user_id, conv_id),
    ).fetchone()
    if row is None:
        raise NotFound("conversation", conv_id)
    row_id, conv, last = row[0], jsontext.loads(row[1]), row[2]
    conv["message_count"] = int(conv.get("message_count", 0)) + 1
    conv["updated_at"] = now
    if body.get("channel"):
        conv["last_channel"] = body["channel"]
    # of the hot columns only updated_at changes: a SET naming only it and data leaves the indexes
    # on the others alone (an UPDATE rewrites the entries of every index on a column it sets)
    sql = f"UPDATE {conv_spec.table} SET updated_at = ?, data = ? WHERE id = ?"
    conn.execute(sql, (now, jsontext.record_text(conv), row_id))
    return int(last or 0) + 1


def update(conn: sqlite3.Connection, kind: Kind, scope: Scope, sid: str, fields: Record) -> Record | None:
    spec = TABLES[kind]
    owned = _OWNED.get(kind, frozenset())
    with write_txn(conn):
        found = _find(conn, spec, scope, sid)
        if found is None:
            return None
        row_id, rec = found
        for key, value in fields.items():
            if not isinstance(key, str):
                raise InvalidInput(f"invalid field name {key!r}")
            if key not in BASE_FIELDS and key not in owned:
                rec[key] = value
        rec["updated_at"] = max(now_ms(), int(rec["updated_at"]))
        _rewrite(conn, spec, row_id, rec)
        return rec


def delete(conn: sqlite3.Connection, kind: Kind, scope: Scope, sid: str) -> bool:
    spec = TABLES[kind]
    with write_txn(conn):
        found = _find(conn, spec, scope, sid)
        if found is None:
            return False
        if kind is Kind.CONVERSATION:
            for table in CASCADE_TABLES:
                conn.execute(
                    f"DELETE FROM {table} WHERE context = ? AND user_id = ? AND conversation_id = ?",
                    (scope.context, scope.user_id, sid),
                )
        conn.execute(f"DELETE FROM {spec.table} WHERE id = ?", (found[0],))
        return True


def list_records(conn: sqlite3.Connection, kind: Kind, scope: Scope, query: ListQuery) -> Page[Record]:
    spec = TABLES[kind]
    limit = check_limit(query.limit)
    if query.text is not None:
        return Page(_search(conn, spec, scope, query, limit))
    sql = scoped("?", scope.context, scope.user_id)
    add_filters(spec, sql, query.filters)
    expr = order_expr(spec, query)
    add_cursor(sql, expr, query)
    direction = "DESC" if query.descending else "ASC"
    rows = conn.execute(
        f"SELECT data, {expr} FROM {spec.table} WHERE {sql.clause()} "
        f"ORDER BY {expr} {direction}, sid {direction} LIMIT ?",
        [*sql.params, limit + 1],
    ).fetchall()
    items = [jsontext.loads(data) for data, _ in rows[:limit]]
    cursor = encode_cursor(rows[limit - 1][1], items[-1]["sid"]) if len(rows) > limit else None
    return Page(items, cursor)


def index_pending(conn: sqlite3.Connection, limit: int | None = None) -> int:
    """Full-text index the rows noted as pending (``KindTable.deferred_fts``), oldest first, at most
    ``limit`` per kind (all when None), inside the caller's write transaction; how many were indexed.
    Run before every search of such a kind (:func:`searches_later_indexed`) and when the store's
    thread is idle (:mod:`store.sqlite.engine`)."""
    done = 0
    for spec in TABLES.values():
        if not spec.deferred_fts or spec.text_field is None:
            continue
        (bound,) = conn.execute(
            f"SELECT max(id) FROM (SELECT id FROM {spec.pending} ORDER BY id LIMIT ?)",
            (-1 if limit is None else limit,),
        ).fetchone()
        if bound is None:
            continue
        conn.execute(index_sql(spec), (bound,))
        done += conn.execute(f"DELETE FROM {spec.pending} WHERE id <= ?", (bound,)).rowcount
    return done


def index_sql(spec: KindTable) -> str:
    """Index the pending rows up to an id. CROSS JOIN keeps the pending rows the outer loop: given
    the choice, SQLite walks the kind's table by rowid up to the bound (every row, at each run)."""
    return (
        f"INSERT INTO {spec.fts}(rowid, body) SELECT m.id, json_extract(m.data, '$.{spec.text_field}') "
        f"FROM {spec.pending} p CROSS JOIN {spec.table} m ON m.id = p.id WHERE p.id <= ?"
    )


def any_pending(conn: sqlite3.Connection) -> bool:
    """Some row waits for its full-text indexing."""
    return any(
        conn.execute(f"SELECT 1 FROM {spec.pending} LIMIT 1").fetchone() is not None
        for spec in TABLES.values()
        if spec.deferred_fts
    )


def searches_later_indexed(kind: Kind, query: ListQuery) -> bool:
    """A text search of a kind indexed later: its pending rows must be indexed first, so it runs in a
    write transaction (see :func:`index_pending`)."""
    return query.text is not None and TABLES[kind].deferred_fts


def _search(
    conn: sqlite3.Connection, spec: KindTable, scope: Scope, query: ListQuery, limit: int
) -> list[Record]:
    if spec.text_field is None:
        raise InvalidInput(f"text search is not available for {spec.table}")
    if query.cursor is not None:
        raise InvalidInput("text search does not page with a cursor")
    match = fts_query(query.text or "")
    if match is None:
        return []
    sql = Where("?", [f"{spec.fts} MATCH ?"], [match])
    sql.add("context = ? AND user_id = ?", scope.context, scope.user_id)
    add_filters(spec, sql, query.filters)
    rows = conn.execute(
        f"SELECT data FROM {spec.fts} JOIN {spec.table} ON {spec.table}.id = {spec.fts}.rowid "
        f"WHERE {sql.clause()} ORDER BY bm25({spec.fts}), sid LIMIT ?",
        [*sql.params, limit],
    ).fetchall()
    return [jsontext.loads(data) for (data,) in rows]


def count(conn: sqlite3.Connection, kind: Kind, scope: Scope, filters: dict[str, JSON] | None) -> int:
    spec = TABLES[kind]
    sql = scoped("?", scope.context, scope.user_id)
    add_filters(spec, sql, filters or {})
    (n,) = conn.execute(f"SELECT count(*) FROM {spec.table} WHERE {sql.clause()}", sql.params).fetchone()
    return int(n)


def contexts(conn: sqlite3.Connection) -> list[str]:
    """Distinct contexts by skipping through each ``(context, sid)`` index: O(contexts x log n)."""
    found: set[str] = set()
    for spec in TABLES.values():
        last = ""
        while True:
            (nxt,) = conn.execute(
                f"SELECT min(context) FROM {spec.table} WHERE context > ?", (last,)
            ).fetchone()
            if nxt is None:
                break
            found.add(nxt)
            last = nxt
    return sorted(found)


def dump_page(conn: sqlite3.Connection, kind: Kind, context: str, after_sid: str, limit: int) -> list[Record]:
    spec = TABLES[kind]
    rows = conn.execute(
        f"SELECT data FROM {spec.table} WHERE context = ? AND sid > ? ORDER BY sid LIMIT ?",
        (context, after_sid, limit),
    ).fetchall()
    return [jsontext.loads(data) for (data,) in rows]


def restore_batch(conn: sqlite3.Connection, items: Sequence[tuple[Kind, Record]]) -> int:
    """Write dumped records in one transaction; returns how many were new or changed."""
    highest: dict[tuple[str, Kind], int] = {}  # counters move once per batch, past the largest sid
    written = 0
    with write_txn(conn):
        for kind, rec in items:
            if _restore_one(conn, kind, rec):
                written += 1
                key = (rec["context"], kind)
                highest[key] = max(highest.get(key, 0), _sid_number(rec["sid"]))
        for (context, kind), number in highest.items():
            conn.execute(
                "INSERT INTO counters (context, kind, last) VALUES (?, ?, ?) "
                "ON CONFLICT (context, kind) DO UPDATE SET last = max(last, excluded.last)",
                (context, kind.value, number),
            )
        index_pending(conn)  # a bulk load indexes as it goes, not at its first search
    return written


def _restore_one(conn: sqlite3.Connection, kind: Kind, rec: Record) -> bool:
    sid, scope = restore.target(kind, rec)
    spec = TABLES[kind]
    row = conn.execute(
        f"SELECT id, data FROM {spec.table} WHERE context = ? AND sid = ?", (scope.context, sid)
    ).fetchone()
    if restore.unchanged(kind, sid, scope, None if row is None else jsontext.loads(row[1]), rec):
        return False
    if kind is Kind.MESSAGE:
        conv = restore.conversation_of(sid, rec)
        exists = "SELECT 1 FROM conversations WHERE context = ? AND sid = ? AND user_id = ?"
        if not conn.execute(exists, (scope.context, conv, scope.user_id)).fetchone():
            raise restore.missing_conversation(sid, conv)
        seq = restore.seq_of(sid, rec)
        holder = conn.execute(
            "SELECT sid FROM messages WHERE context = ? AND user_id = ? AND conversation_id = ? AND seq = ?",
            (scope.context, scope.user_id, conv, seq),
        ).fetchone()
        restore.check_seq_free(sid, conv, seq, None if holder is None else holder[0])
    if row is None:
        _insert(conn, spec, rec, None)
    else:
        _rewrite(conn, spec, row[0], rec)
    return True
