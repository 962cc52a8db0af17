"""The SQLite schema of the embedded engine: one table per object kind, leases, sid counters.

Every record is stored whole as JSON text in ``data``; the fields that queries filter or sort on are
copied into real columns ("hot" columns) so that indexes serve them. Fields that are not hot are still
filterable through ``json_extract`` (correct, just not indexed).

Full-text search uses contentless FTS5 tables (``content=''``): the text lives once, in ``data``, and
triggers keep the index in step with every insert, update and delete in the same transaction. Messages
are indexed later (``deferred_fts``): their insert trigger only notes the new row in
``messages_fts_pending``, and :func:`store.sqlite.ops.index_pending` indexes the noted rows when the
store's thread is idle and before every search of messages (so a search still sees every message). A
turn's two messages used to cost their transactions ~0.2 ms of FTS5 work and 12 of their ~38 pages
written to the log; that work now runs off the turn's path. See docs/store.md.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from store.models import Kind

#: 1: the first schema; 2: the ``attachments`` table, and lease rows carry their holder's process
#: identity (owner_host, owner_pid, owner_started); a data dir of version 1 gains both when opened;
#: 3: conversations get the indexed hot column ``tail_digest`` (filled from ``data`` on upgrade);
#: 4: messages are full-text indexed later (``messages_fts_pending``; the message triggers replaced)
SCHEMA_VERSION = 4


@dataclass(frozen=True, slots=True)
class KindTable:
    """How one object kind is laid out: its table, extra hot columns and searchable text field."""

    table: str
    #: hot column name -> SQL type (besides the columns every table has)
    hot: tuple[tuple[str, str], ...] = ()
    #: the JSON field indexed for ``text`` queries (None: no text search for this kind)
    text_field: str | None = None
    #: new rows are full-text indexed later, not in the inserting transaction (see the module doc)
    deferred_fts: bool = False

    @property
    def hot_names(self) -> tuple[str, ...]:
        return COMMON_COLUMNS + tuple(name for name, _ in self.hot)

    @property
    def fts(self) -> str:
        return f"{self.table}_fts"

    @property
    def pending(self) -> str:
        """The table of rows inserted but not yet in :attr:`fts` (``deferred_fts`` kinds)."""
        return f"{self.table}_fts_pending"


#: columns every kind table has (besides the integer row id and ``request_key``/``data``)
COMMON_COLUMNS = ("sid", "context", "user_id", "created_at", "updated_at")

TABLES: dict[Kind, KindTable] = {
    Kind.CONVERSATION: KindTable(
        "conversations", (("is_archived", "INTEGER"), ("tail_digest", "TEXT")), "title"
    ),
    Kind.MESSAGE: KindTable(
        "messages", (("conversation_id", "TEXT"), ("seq", "INTEGER")), "content", deferred_fts=True
    ),
    Kind.MEMORY: KindTable("memories", (("hash", "TEXT"),), "content"),
    Kind.AUDIT: KindTable("audit", (("conversation_id", "TEXT"),)),
    Kind.USAGE: KindTable("usage", (("conversation_id", "TEXT"),)),
    Kind.STATE: KindTable("state", (("key", "TEXT"),)),
    Kind.ATTACHMENT: KindTable("attachments", (("conversation_id", "TEXT"),)),
}

#: tables whose rows belong to a conversation and are deleted with it, in the same transaction
CASCADE_TABLES = (TABLES[Kind.MESSAGE].table, TABLES[Kind.ATTACHMENT].table)

#: extra indexes per kind, beyond the ones every table gets; each serves a hot query of store.api.store
_EXTRA_INDEXES: dict[Kind, tuple[tuple[str, str], ...]] = {
    # list by recency, default view hides archived ones
    Kind.CONVERSATION: (
        ("recent", "context, user_id, updated_at, sid"),
        ("recent_live", "context, user_id, is_archived, updated_at, sid"),
        # the OpenAI endpoint's history match: one read of the newest conversation with this digest
        ("tail", "context, user_id, tail_digest, updated_at, sid"),
    ),
    # the seq order of a conversation: history windows, paging, max(seq) on append; UNIQUE makes a
    # duplicate seq impossible whatever the code above does
    Kind.MESSAGE: (("seq", "UNIQUE context, user_id, conversation_id, seq"),),
    # the sort columns trail the equality column so that one index serves "where hash = ? order by ..."
    Kind.MEMORY: (("hash", "context, user_id, hash, created_at, sid"),),
    Kind.AUDIT: (("conv", "context, user_id, conversation_id, created_at, sid"),),
    Kind.USAGE: (("conv", "context, user_id, conversation_id, created_at, sid"),),
    Kind.STATE: (("key", "context, user_id, key, created_at, sid"),),
    # deleted with their conversation
    Kind.ATTACHMENT: (("conv", "context, user_id, conversation_id, created_at, sid"),),
}


def _table_ddl(kind: Kind, spec: KindTable) -> list[str]:
    hot = "".join(f", {name} {sqltype} NOT NULL" for name, sqltype in spec.hot)
    t = spec.table
    ddl = [
        f"CREATE TABLE IF NOT EXISTS {t} ("
        "id INTEGER PRIMARY KEY, sid TEXT NOT NULL, context TEXT NOT NULL, user_id TEXT NOT NULL, "
        f"created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL{hot}, request_key TEXT, "
        "data TEXT NOT NULL)",
        # sids are unique per (context, kind), like OSIS where each context is its own object space
        f"CREATE UNIQUE INDEX IF NOT EXISTS {t}_sid ON {t}(context, sid)",
        f"CREATE INDEX IF NOT EXISTS {t}_created ON {t}(context, user_id, created_at, sid)",
        f"CREATE UNIQUE INDEX IF NOT EXISTS {t}_request_key ON {t}(context, user_id, request_key) "
        "WHERE request_key IS NOT NULL",
    ]
    for suffix, cols in _EXTRA_INDEXES.get(kind, ()):
        unique = "UNIQUE " if cols.startswith("UNIQUE ") else ""
        ddl.append(f"CREATE {unique}INDEX IF NOT EXISTS {t}_{suffix} ON {t}({cols.removeprefix('UNIQUE ')})")
    if spec.text_field and spec.deferred_fts:
        ddl += _deferred_fts_ddl(spec, spec.text_field)
    elif spec.text_field:
        f, path = spec.fts, f"'$.{spec.text_field}'"
        ddl += [
            _fts_table(f),
            f"CREATE TRIGGER IF NOT EXISTS {t}_ai AFTER INSERT ON {t} BEGIN "
            f"INSERT INTO {f}(rowid, body) VALUES (new.id, json_extract(new.data, {path})); END",
            f"CREATE TRIGGER IF NOT EXISTS {t}_ad AFTER DELETE ON {t} BEGIN "
            f"INSERT INTO {f}({f}, rowid, body) VALUES ('delete', old.id, json_extract(old.data, {path})); "
            "END",
            f"CREATE TRIGGER IF NOT EXISTS {t}_au AFTER UPDATE OF data ON {t} "
            f"WHEN json_extract(old.data, {path}) IS NOT json_extract(new.data, {path}) BEGIN "
            f"INSERT INTO {f}({f}, rowid, body) VALUES ('delete', old.id, json_extract(old.data, {path})); "
            f"INSERT INTO {f}(rowid, body) VALUES (new.id, json_extract(new.data, {path})); END",
        ]
    return ddl


def _fts_table(name: str) -> str:
    return (
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {name} USING fts5(body, content='', "
        "tokenize='porter unicode61 remove_diacritics 2')"
    )


def _deferred_fts_ddl(spec: KindTable, text_field: str) -> list[str]:
    """A kind indexed later: an insert notes the row in the pending table; a delete or a change of
    the text takes the row out of the index only when it is there (a contentless index must be told
    the exact text it holds), and a pending row stays pending (it is indexed with its text then)."""
    t, f, pending, path = spec.table, spec.fts, spec.pending, f"'$.{text_field}'"
    indexed = f"NOT EXISTS (SELECT 1 FROM {pending} WHERE id = old.id)"
    unindex = f"INSERT INTO {f}({f}, rowid, body) SELECT 'delete', old.id, json_extract(old.data, {path})"
    return [
        _fts_table(f),
        f"CREATE TABLE IF NOT EXISTS {pending} (id INTEGER PRIMARY KEY)",
        f"CREATE TRIGGER IF NOT EXISTS {t}_ai AFTER INSERT ON {t} BEGIN "
        f"INSERT INTO {pending}(id) VALUES (new.id); END",
        f"CREATE TRIGGER IF NOT EXISTS {t}_ad AFTER DELETE ON {t} BEGIN "
        f"{unindex} WHERE {indexed}; DELETE FROM {pending} WHERE id = old.id; END",
        f"CREATE TRIGGER IF NOT EXISTS {t}_au AFTER UPDATE OF data ON {t} "
        f"WHEN json_extract(old.data, {path}) IS NOT json_extract(new.data, {path}) BEGIN "
        f"{unindex} WHERE {indexed}; "
        f"INSERT INTO {f}(rowid, body) SELECT new.id, json_extract(new.data, {path}) WHERE {indexed}; END",
    ]


#: the triggers each version before 4 had on the kinds now indexed later (replaced on upgrade)
_IMMEDIATE_FTS_TRIGGERS = ("ai", "ad", "au")


def _upgrade_fts(conn: sqlite3.Connection, version: int) -> None:
    """Schema 4: the kinds indexed later drop their old triggers, which indexed in the inserting
    transaction (``schema_ddl`` then creates the new ones). Their rows are all indexed already."""
    if version == 0 or version >= 4:
        return
    for spec in TABLES.values():
        if spec.deferred_fts:
            for suffix in _IMMEDIATE_FTS_TRIGGERS:
                conn.execute(f"DROP TRIGGER IF EXISTS {spec.table}_{suffix}")


def schema_ddl() -> list[str]:
    ddl = [
        # the last sid number handed out (or restored) per context and kind
        "CREATE TABLE IF NOT EXISTS counters (context TEXT NOT NULL, kind TEXT NOT NULL, "
        "last INTEGER NOT NULL, PRIMARY KEY (context, kind)) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS leases (context TEXT NOT NULL, user_id TEXT NOT NULL, "
        "key TEXT NOT NULL, holder TEXT NOT NULL, expires_at INTEGER, "
        "owner_host TEXT, owner_pid INTEGER, owner_started INTEGER, "
        "PRIMARY KEY (context, user_id, key)) WITHOUT ROWID",
    ]
    for kind, spec in TABLES.items():
        ddl += _table_ddl(kind, spec)
    return ddl


#: the first and the longest pause between two tries of the switch to WAL, seconds
_WAL_RETRY_FIRST_S, _WAL_RETRY_MAX_S = 0.001, 0.05


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> tuple[object, int]:
    """``PRAGMA journal_mode = WAL``, tried again while SQLite answers it "busy", for up to
    ``busy_timeout_ms``; the mode it answers, and how many times it was tried again. Processes
    opening a brand-new data dir at the same moment (two daemons started together) got "database is
    locked" at once, well within the busy timeout, while another of them was switching the new file
    to WAL. Each switch reads the file under a shared lock, then needs to write it: where waiting
    could deadlock (a reader asking to write while another connection holds the write lock), SQLite
    answers "busy" without calling its busy handler (see ``sqlite3_busy_handler``'s documentation);
    the caller has to let go and try again. A reader's lock alone does make the switch wait. A
    database already in WAL mode answers at once."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    pause = _WAL_RETRY_FIRST_S
    retries = 0
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0], retries
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)  # this runs on the thread that opens the store, never on the event loop
        pause = min(pause * 2, _WAL_RETRY_MAX_S)
        retries += 1


def configure(conn: sqlite3.Connection, busy_timeout_ms: int, *, fsync_commits: bool = True) -> int:
    """Connection settings; see docs/store.md for why each one. Returns how many times the switch to
    WAL was tried again (:func:`_switch_to_wal`).

    WAL lets readers run beside the one writer and makes a commit one append to the log;
    ``synchronous=FULL`` fsyncs the log on every commit, so an acknowledged write survives power loss
    as well as ``kill -9``; NORMAL (``fsync_commits=False``) only survives the latter, since the log is
    fsynced at checkpoints only, but it never corrupts the database.
    """
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    mode, retries = _switch_to_wal(conn, busy_timeout_ms)
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"cannot switch the database to WAL mode (got {mode})")
    conn.execute(f"PRAGMA synchronous = {'FULL' if fsync_commits else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys = OFF")
    # An append writes ~17 pages to the log and the default checkpoint (every 1,000 pages) runs inside
    # the committing append, so 1 append in 60 paid for it: inside the p99. At 4,000 pages (a 16 MB
    # log) it is 1 in 235, four times longer each time (the cost moves to the p99.9).
    conn.execute("PRAGMA wal_autocheckpoint = 4000")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA cache_size = -32000")
    return retries


def configure_reader(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """The settings of the reads' own connection (the engine's ``read``): it never writes, and the
    small reads it serves need a smaller page cache than the writer's."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA query_only = ON")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA cache_size = -8000")


#: columns added to ``leases`` by schema 2; a data dir of schema 1 gets them in place (NULL: no owner)
_LEASE_OWNER_COLUMNS = (("owner_host", "TEXT"), ("owner_pid", "INTEGER"), ("owner_started", "INTEGER"))


def _upgrade_leases(conn: sqlite3.Connection) -> None:
    present = {row[1] for row in conn.execute("PRAGMA table_info(leases)")}
    for name, sqltype in _LEASE_OWNER_COLUMNS:
        if name not in present:
            conn.execute(f"ALTER TABLE leases ADD COLUMN {name} {sqltype}")


def _upgrade_conversations(conn: sqlite3.Connection) -> None:
    """Schema 3: the ``tail_digest`` hot column, filled from each record's JSON (before its index is
    created: ``schema_ddl`` creates the index, so the column must exist first)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(conversations)")}
    if present and "tail_digest" not in present:
        conn.execute("ALTER TABLE conversations ADD COLUMN tail_digest TEXT NOT NULL DEFAULT ''")
        conn.execute(
            "UPDATE conversations SET tail_digest = coalesce(json_extract(data, '$.tail_digest'), '') "
            "WHERE json_extract(data, '$.tail_digest') IS NOT NULL"
        )


def migrate(conn: sqlite3.Connection) -> None:
    """Create the schema (idempotent; several processes may race here, BEGIN IMMEDIATE orders them)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"the data dir was written by a newer hero-agent (schema {version}, this one knows "
                f"{SCHEMA_VERSION})"
            )
        _upgrade_conversations(conn)
        _upgrade_fts(conn, version)
        for stmt in schema_ddl():
            conn.execute(stmt)
        _upgrade_leases(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
