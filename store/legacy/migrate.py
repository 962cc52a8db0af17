"""``hero-agent migrate-sqlite``: one-time import of a legacy agent SQLite database (SPEC 7.4).

The legacy tables ``conversations``, ``messages``, ``memories``, ``audit_log`` and ``usage_log`` are read
(read-only, in a worker thread) and written through the engine seam under one scope. Column names are
matched case-insensitively against the aliases in :mod:`store.legacy.columns` (documented in
docs/osis.md); columns no alias claims are kept in the record's ``legacy`` field. A row that cannot be
mapped is skipped with a reason, never fatal.

Idempotent: every record is created with a request key derived from its legacy id
(``legacy:<table>:<id>``; memories use the store's own content-hash key), so a second run finds each
record already present and adds nothing. A record created by an earlier run is recognised by its
``legacy_import`` run id differing from this run's.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio

from store.api.store import memory_hash
from store.engine import Engine
from store.errors import InvalidInput, NotFound
from store.legacy.columns import TABLES, RowError, map_row, row_user
from store.models import Kind, Record, Scope, validate_user

if TYPE_CHECKING:
    from config import Settings

REQUIRED_TABLES = ("conversations", "messages")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_KIND = {
    "conversations": Kind.CONVERSATION,
    "messages": Kind.MESSAGE,
    "memories": Kind.MEMORY,
    "audit_log": Kind.AUDIT,
    "usage_log": Kind.USAGE,
}


@dataclass(slots=True)
class TableReport:
    imported: int = 0
    present: int = 0
    skipped: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.reasons[reason] += 1


@dataclass(slots=True)
class MigrationReport:
    """Counts per legacy table; ``missing`` lists optional tables the file does not have; ``users``
    the records written (imported or already present) per user, ``user_columns`` where the users came
    from (``conversations.owner``), ``all_to`` the one user every row went to (``--all-to-user``)."""

    tables: dict[str, TableReport] = field(default_factory=lambda: {t: TableReport() for t in TABLES})
    missing: list[str] = field(default_factory=list)
    users: Counter[str] = field(default_factory=Counter)
    user_columns: set[str] = field(default_factory=set)
    all_to: str = ""

    def lines(self) -> list[str]:
        return [*self._table_lines(), self._user_line()]

    def _user_line(self) -> str:
        counts = ", ".join(f"{user} {n}" for user, n in sorted(self.users.items()))
        if self.all_to:
            return f"users: every row to {self.all_to} (--all-to-user): {counts or 'none'}"
        if not self.user_columns:
            return f"users: no user column, every row to the default user: {counts or 'none'}"
        return f"users (from {', '.join(sorted(self.user_columns))}): {counts or 'none'}"

    def _table_lines(self) -> list[str]:
        out = []
        for name, t in self.tables.items():
            if name in self.missing:
                out.append(f"{name}: table not present")
                continue
            line = f"{name}: {t.imported} imported, {t.present} already present, {t.skipped} skipped"
            if t.reasons:
                line += " (" + "; ".join(f"{n} {r}" for r, n in sorted(t.reasons.items())) + ")"
            out.append(line)
        return out


LegacyRows = dict[str, list[dict[str, Any]]]


def read_legacy(path: Path) -> tuple[LegacyRows, list[str]]:
    """Every row of the legacy tables (blocking: run in a worker thread). Raises InvalidInput."""
    if path.is_dir():
        raise InvalidInput(f"{path}: is a directory, not an SQLite database file")
    if not path.exists():
        raise InvalidInput(f"{path}: no such file")
    if not path.is_file():
        raise InvalidInput(f"{path}: not a regular file, so not an SQLite database")
    try:
        with path.open("rb") as fh:
            magic = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if magic != _SQLITE_MAGIC:
        raise InvalidInput(f"{path}: not an SQLite database")
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise InvalidInput(f"{path}: cannot open the database read-only: {exc}") from None
    try:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        names = {r[0].lower(): r[0] for r in tables}
        absent = [t for t in REQUIRED_TABLES if t not in names]
        if absent:
            raise InvalidInput(
                f"{path}: not a legacy agent database (missing table(s) {', '.join(absent)}; "
                f"expected {', '.join(TABLES)})"
            )
        rows: LegacyRows = {}
        for table in TABLES:
            if table in names:
                rows[table] = _read_table(conn, names[table])
        return rows, [t for t in TABLES if t not in names]
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"{path}: unreadable SQLite database: {exc}") from None
    finally:
        conn.close()


def _read_table(conn: sqlite3.Connection, name: str) -> list[dict[str, Any]]:
    quoted = '"' + name.replace('"', '""') + '"'
    try:
        cur = conn.execute(f"SELECT rowid AS __rowid__, * FROM {quoted}")
    except sqlite3.OperationalError:  # a WITHOUT ROWID table
        cur = conn.execute(f"SELECT * FROM {quoted}")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur]


async def migrate_file(
    settings: Settings, scope: Scope, path: str | Path, *, keep_users: bool = True
) -> MigrationReport:
    """Open the configured store and import ``path`` into ``scope``'s context (see :func:`migrate`)."""
    from store.factory import open_store  # noqa: PLC0415 (store.factory imports every engine)

    rows, missing = await anyio.to_thread.run_sync(read_legacy, Path(path))
    async with open_store(settings) as store:
        return await migrate_rows(store.engine, scope, rows, missing, keep_users=keep_users)


async def migrate(
    engine: Engine, scope: Scope, path: str | Path, *, keep_users: bool = True
) -> MigrationReport:
    """Import ``path`` into ``scope``'s context through an open engine. With ``keep_users`` a row
    whose table has a user column (:data:`~store.legacy.columns.USER_COLUMNS`) keeps its user (a
    message its conversation's); rows without one go to ``scope.user_id``. Without, every row does."""
    rows, missing = await anyio.to_thread.run_sync(read_legacy, Path(path))
    return await migrate_rows(engine, scope, rows, missing, keep_users=keep_users)


async def migrate_rows(
    engine: Engine,
    scope: Scope,
    rows: LegacyRows,
    missing: list[str],
    *,
    keep_users: bool = True,
) -> MigrationReport:
    report = MigrationReport(missing=list(missing), all_to="" if keep_users else scope.user_id)
    run = uuid.uuid4().hex
    #: legacy conversation id -> (new sid, its user)
    conv_sids: dict[str, tuple[str, str]] = {}
    for table in TABLES:
        mapped: list[tuple[str, Record, tuple[int, int, str], str | None]] = []
        rep = report.tables[table]
        for raw in rows.get(table, []):
            try:
                legacy_id, fields, sort_key = map_row(table, raw)
                user = _user_of(raw, table, report) if keep_users else None
            except RowError as exc:
                rep.skip(str(exc))
                continue
            mapped.append((legacy_id, fields, sort_key, user))
        if table == "messages":
            # seq follows the legacy order: by time, then numeric id, then id (rows without a time last)
            mapped.sort(key=lambda m: m[2])
        for legacy_id, fields, _, user in mapped:
            row = _Row(table, legacy_id, fields, user)
            await _write(engine, scope, row, conv_sids=conv_sids, run=run, report=report)
    return report


def _user_of(raw: dict[str, Any], table: str, report: MigrationReport) -> str | None:
    """The row's user from its user column (None: none or empty); RowError for one that cannot be a
    user id."""
    column, user = row_user(raw)
    if column is None:
        return None
    report.user_columns.add(f"{table}.{column}")
    if user is None:
        return None
    try:
        return validate_user(user)
    except InvalidInput:
        raise RowError("bad user") from None


@dataclass(frozen=True, slots=True)
class _Row:
    """One mapped legacy row: its table, id, fields for the engine and own user (None: none)."""

    table: str
    legacy_id: str
    fields: Record
    user: str | None


async def _write(
    engine: Engine,
    scope: Scope,
    row: _Row,
    *,
    conv_sids: dict[str, tuple[str, str]],
    run: str,
    report: MigrationReport,
) -> None:
    """Write one mapped row. Its user: a message's is its conversation's; another row's is its own
    user column's, else its conversation's, else the default (``scope.user_id``)."""
    table, legacy_id, fields, own_user = row.table, row.legacy_id, row.fields, row.user
    rep = report.tables[table]
    user = own_user
    for ref in ("conversation_id", "source_conversation_id"):
        old = fields.get(ref)
        if old in (None, ""):
            continue
        known = conv_sids.get(str(old))
        if known is not None and (own_user is None or table == "messages" or known[1] == own_user):
            fields[ref], conv_user = known
            user = conv_user if table == "messages" or own_user is None else own_user
        elif table == "messages":
            rep.skip("unknown conversation")
            return
        else:  # a dangling reference is kept for the record, not as a live link
            fields["legacy"][ref] = old
            fields[ref] = ""
    key = f"legacy:{table}:{legacy_id}"
    if table == "memories":
        fields["hash"] = memory_hash(fields["content"])
        key = f"memory:{fields['hash']}"
    fields["legacy_id"] = f"{table}:{legacy_id}"
    fields["legacy_import"] = run
    target = Scope(scope.context, user or scope.user_id)
    try:
        rec = await engine.create(_KIND[table], target, fields, request_key=key)
    except (InvalidInput, NotFound) as exc:
        rep.skip(f"refused by the store: {exc}")
        return
    if table == "conversations":
        conv_sids[legacy_id] = (rec["sid"], target.user_id)
    report.users[target.user_id] += 1
    if rec.get("legacy_import") == run:
        rep.imported += 1
    else:
        rep.present += 1
