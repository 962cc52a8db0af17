"""The PostgreSQL schema of the ``postgres`` engine and its versioned migrations.

One table per object kind, like the embedded engine (``store.sqlite.schema``), with two differences
that let a turn's opening run as ONE message of statements (no client logic between them):

* the fields the engine owns are columns only: ``sid``, ``context``, ``user_id``, ``created_at``,
  ``updated_at`` everywhere, a message's ``seq``, a conversation's ``message_count`` and
  ``last_channel`` (NULL: as in ``data``). ``data`` (JSON text, exactly as Python wrote it) holds the
  rest, and a record is ``data`` with those columns laid over it. So the server can number a message
  and touch its conversation without rewriting any JSON;
* the searchable text is a ``tsvector`` column (``simple`` configuration) filled by the writing
  statement, indexed by GIN.

Text columns compare bytewise (``COLLATE "C"``), as SQLite does, so sids, cursors and sort orders are
the same on both engines. Leases are rows with an expiry; no advisory locks, no extensions: the only
server-side code is two small functions (``hero_sid``: base-36 sids; ``hero_fail``: a statement that
must stop its batch, such as a refused required claim).

Migrations are numbered; :func:`migrate` applies the missing ones under a row lock on the one row of
``hero_schema``, so several daemons starting at once upgrade the database exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from store.models import Kind


@dataclass(frozen=True, slots=True)
class PgTable:
    """One kind's table: its name, hot columns copied from the record, owned columns, searchable text."""

    table: str
    #: hot columns copied from the record (also kept in ``data``): name -> SQL type
    hot: tuple[tuple[str, str], ...] = ()
    #: columns the engine owns beyond the common ones (NOT in ``data``; laid over it on read)
    owned: tuple[tuple[str, str], ...] = ()
    text_field: str | None = None

    @property
    def hot_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.hot)

    @property
    def owned_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.owned)

    @property
    def select(self) -> str:
        """The columns a read selects, in the order :func:`store.postgres.ops.record` expects."""
        return ", ".join(("sid", "context", "user_id", "created_at", "updated_at", *self.owned_names, "data"))


_TEXT = 'text COLLATE "C" NOT NULL'
TABLES: dict[Kind, PgTable] = {
    Kind.CONVERSATION: PgTable(
        "conversations",
        (("is_archived", "integer NOT NULL"), ("tail_digest", _TEXT)),
        (("message_count", "bigint"), ("last_channel", 'text COLLATE "C"')),
        "title",
    ),
    Kind.MESSAGE: PgTable(
        "messages", (("conversation_id", _TEXT),), (("seq", "bigint NOT NULL"),), "content"
    ),
    Kind.MEMORY: PgTable("memories", (("hash", _TEXT),), text_field="content"),
    Kind.AUDIT: PgTable("audit", (("conversation_id", _TEXT),)),
    Kind.USAGE: PgTable("usage", (("conversation_id", _TEXT),)),
    Kind.STATE: PgTable("state", (("key", _TEXT),)),
    Kind.ATTACHMENT: PgTable("attachments", (("conversation_id", _TEXT),)),
}
#: tables whose rows belong to a conversation and are deleted with it, in the same transaction
CASCADE_TABLES = (TABLES[Kind.MESSAGE].table, TABLES[Kind.ATTACHMENT].table)

_EXTRA_INDEXES: dict[Kind, tuple[tuple[str, str], ...]] = {
    Kind.CONVERSATION: (
        ("recent", "context, user_id, updated_at, sid"),
        ("recent_live", "context, user_id, is_archived, updated_at, sid"),
    ),
    Kind.MESSAGE: (("seq", "UNIQUE context, user_id, conversation_id, seq"),),
    Kind.MEMORY: (("hash", "context, user_id, hash, created_at, sid"),),
    Kind.AUDIT: (("conv", "context, user_id, conversation_id, created_at, sid"),),
    Kind.USAGE: (("conv", "context, user_id, conversation_id, created_at, sid"),),
    Kind.STATE: (("key", "context, user_id, key, created_at, sid"),),
    Kind.ATTACHMENT: (("conv", "context, user_id, conversation_id, created_at, sid"),),
}


#: hot columns a later migration added: migration 1 creates its tables without them
_LATER_HOT: dict[Kind, tuple[str, ...]] = {Kind.CONVERSATION: ("tail_digest",)}


def _v1_spec(kind: Kind, spec: PgTable) -> PgTable:
    """``spec`` as migration 1 created it (without the columns :data:`_LATER_HOT` names)."""
    later = _LATER_HOT.get(kind, ())
    return replace(spec, hot=tuple(h for h in spec.hot if h[0] not in later))


def _table_ddl(kind: Kind, spec: PgTable) -> list[str]:
    t = spec.table
    cols = "".join(f", {name} {sqltype}" for name, sqltype in (*spec.hot, *spec.owned))
    fts = ", fts tsvector NOT NULL" if spec.text_field else ""
    ddl = [
        f"CREATE TABLE {t} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, sid {_TEXT}, "
        f"context {_TEXT}, user_id {_TEXT}, created_at bigint NOT NULL, updated_at bigint NOT NULL"
        f'{cols}, request_key text COLLATE "C", data text NOT NULL{fts})',
        f"CREATE UNIQUE INDEX {t}_sid ON {t} (context, sid)",
        f"CREATE INDEX {t}_created ON {t} (context, user_id, created_at, sid)",
        f"CREATE UNIQUE INDEX {t}_request_key ON {t} (context, user_id, request_key) "
        "WHERE request_key IS NOT NULL",
    ]
    for suffix, index_cols in _EXTRA_INDEXES.get(kind, ()):
        unique = "UNIQUE " if index_cols.startswith("UNIQUE ") else ""
        ddl.append(f"CREATE {unique}INDEX {t}_{suffix} ON {t} ({index_cols.removeprefix('UNIQUE ')})")
    if spec.text_field:
        ddl.append(f"CREATE INDEX {t}_fts ON {t} USING gin (fts)")
    return ddl


_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"

#: migration 1: the whole schema of this first version
_V1 = [
    'CREATE TABLE counters (context text COLLATE "C" NOT NULL, kind text NOT NULL, '
    "last bigint NOT NULL, PRIMARY KEY (context, kind))",
    f"CREATE TABLE leases (context {_TEXT}, user_id {_TEXT}, key {_TEXT}, holder text NOT NULL, "
    "expires_at bigint, owner_host text, owner_pid bigint, owner_started bigint, "
    "PRIMARY KEY (context, user_id, key))",
    # the sid of counter value n: lower-case base 36, at least 4 characters (as store.sqlite.ops)
    "CREATE FUNCTION hero_sid(n bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$ "
    f"SELECT lpad(string_agg(substr('{_B36}', (div(n, 36::numeric ^ k) % 36)::int + 1, 1), '' "
    "ORDER BY k DESC), 4, '0') FROM generate_series(0, 12) AS k "
    "WHERE 36::numeric ^ k <= greatest(n, 1) $$",
    # stops the statement (and its batch, and its transaction): 'hero:<what>:<detail>'
    "CREATE FUNCTION hero_fail(what text, detail text) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$ "
    "BEGIN RAISE EXCEPTION 'hero:%:%', what, detail; END $$",
    # the server's clock in ms: leases expire by one clock for every daemon
    "CREATE FUNCTION hero_now() RETURNS bigint LANGUAGE sql VOLATILE AS $$ "
    "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$",
]
for _kind, _spec in TABLES.items():
    _V1 += _table_ddl(_kind, _v1_spec(_kind, _spec))

#: migration 2: a conversation's ``tail_digest`` (the OpenAI endpoint's history match: the newest
#: conversation of a scope with a digest, one indexed read), filled from each record's JSON
_V2 = [
    f"ALTER TABLE conversations ADD COLUMN tail_digest {_TEXT} DEFAULT ''",
    "UPDATE conversations SET tail_digest = coalesce(data::json->>'tail_digest', '') "
    "WHERE data::json->>'tail_digest' IS NOT NULL",
    "ALTER TABLE conversations ALTER COLUMN tail_digest DROP DEFAULT",
    "CREATE INDEX conversations_tail ON conversations (context, user_id, tail_digest, updated_at, sid)",
]

#: migration 3: ``hero_sid`` in PL/pgSQL. The SQL version (an aggregate over ``generate_series``, never
#: inlined) was planned anew on every call, three times a turn (0.14 ms of the server's 0.9 ms per
#: turn); PL/pgSQL keeps its expressions' plans. And it cut a sid to 4 characters (``lpad`` truncates):
#: from the 1,679,616th record of a kind in a context (36^4) sids repeated and creates failed. The
#: same text as before below that, the embedded engine's (``store.sqlite.ops.to_base36``) above
_V3 = [
    "CREATE OR REPLACE FUNCTION hero_sid(n bigint) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$ "
    "DECLARE v bigint := n; s text := ''; BEGIN "
    "IF v IS NULL THEN RETURN NULL; END IF; "
    "IF v <= 0 THEN RETURN '0000'; END IF; "
    f"WHILE v > 0 LOOP s := substr('{_B36}', (v % 36)::int + 1, 1) || s; v := v / 36; END LOOP; "
    "RETURN CASE WHEN length(s) < 4 THEN lpad(s, 4, '0') ELSE s END; END $$",
]

#: every migration, in order: MIGRATIONS[i] takes a database from version i to i + 1
MIGRATIONS: tuple[tuple[str, ...], ...] = (tuple(_V1), tuple(_V2), tuple(_V3))
SCHEMA_VERSION = len(MIGRATIONS)

#: the version table: one row, locked by the daemon that migrates
VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS hero_schema (id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL)"
)
