"""Moving every record of one user to another user, in one context, in one transaction (embedded engine).

Used by ``hero-agent store rename-user`` (e.g. the web page's old ``local`` user becoming the OS user).
Sids are unique per context, not per user, so records keep their sids and a conversation's messages stay
attached to it; only ``user_id`` changes, in the row and in its JSON ``data``.

With ``merge`` the target may already hold records. Where the two users' records would clash, the
target's win and the moved user's are dropped: a state key both have (the active conversation, a
channel's marks), a memory with the same hash (a duplicate), a lease of the same key; a request key both
used is cleared on the moved record (it only served de-duplication of a create long done).
"""

from __future__ import annotations

import sqlite3

from store.errors import Conflict
from store.models import Kind
from store.sqlite.ops import write_txn
from store.sqlite.schema import TABLES

#: per kind, the field whose equal value in the target's records makes the moved record a duplicate
_TARGET_WINS: dict[Kind, str] = {Kind.STATE: "key", Kind.MEMORY: "hash"}


def rename_user(conn: sqlite3.Connection, context: str, old: str, new: str, merge: bool) -> dict[str, int]:
    """Move ``old``'s records in ``context`` to ``new``: how many of each kind moved, and under
    ``"dropped"`` how many of ``old``'s clashed with ``new``'s and were dropped."""
    moved: dict[str, int] = {}
    with write_txn(conn):
        # nothing to move answers before the target check: a retried call that already moved
        # everything (its answer lost) is then a no-op, not a Conflict
        if old == new or not _holds_records(conn, context, old):
            return moved
        if not merge and _holds_records(conn, context, new):
            raise Conflict(f"user {new!r} already has data in context {context!r} (use --merge to merge)")
        for kind, spec in TABLES.items():
            t = spec.table
            scope_old = (context, old)
            dropped = 0
            column = _TARGET_WINS.get(kind)
            if column is not None:
                dropped = conn.execute(
                    f"DELETE FROM {t} WHERE context = ? AND user_id = ? AND {column} IN "
                    f"(SELECT {column} FROM {t} WHERE context = ? AND user_id = ?)",
                    (*scope_old, context, new),
                ).rowcount
            conn.execute(
                f"UPDATE {t} SET request_key = NULL WHERE context = ? AND user_id = ? AND request_key IN "
                f"(SELECT request_key FROM {t} WHERE context = ? AND user_id = ? "
                "AND request_key IS NOT NULL)",
                (*scope_old, context, new),
            )
            count = conn.execute(
                f"UPDATE {t} SET user_id = ?, data = json_set(data, '$.user_id', ?) "
                "WHERE context = ? AND user_id = ?",
                (new, new, *scope_old),
            ).rowcount
            if count:
                moved[kind.value] = count
            if dropped:
                moved["dropped"] = moved.get("dropped", 0) + dropped
        conn.execute(
            "DELETE FROM leases WHERE context = ? AND user_id = ? AND key IN "
            "(SELECT key FROM leases WHERE context = ? AND user_id = ?)",
            (context, old, context, new),
        )
        conn.execute("UPDATE leases SET user_id = ? WHERE context = ? AND user_id = ?", (new, context, old))
    return moved


def _holds_records(conn: sqlite3.Connection, context: str, user: str) -> bool:
    return any(
        conn.execute(
            f"SELECT 1 FROM {spec.table} WHERE context = ? AND user_id = ? LIMIT 1", (context, user)
        ).fetchone()
        for spec in TABLES.values()
    )
