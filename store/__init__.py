"""The OSIS-shaped object store: its face, the only module imported from outside ``store/``.

The store knows nothing of LLMs or channels. Inside, one subpackage per concept:

* ``store.models``, ``store.errors``: the objects (and :class:`Scope`) and the error tree;
* ``store.engine``: the engine seam every engine implements (:class:`Engine` and its batch steps);
* ``store.api.store``: the domain :class:`Store` the agent talks to, over one engine;
* ``store.sqlite``: the embedded engine (SQLite, WAL); ``store.osis``: the OSIS JSON-RPC protocol,
  its client engine and its server app; ``store.legacy``: the one-time legacy SQLite import;
* ``store.factory`` (:func:`open_store`), ``store.transfer`` (export/import).

Deep imports (``store.api.turn``, ``store.sqlite.engine`` ...) from outside ``store/`` are banned by
lint (ruff's banned-api): import from here. The engines, the OSIS server and the legacy import load on
first use (module ``__getattr__``), so that importing the face stays as light as it was: the embedded
path never loads the RPC client, and ``hero-agent --help`` loads neither SQLite nor uvicorn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from store.api.attachments import NewAttachment, attachment_bytes
from store.api.base import MAX_TAGS, MAX_TITLE_CHARS, memory_hash, now_ms
from store.api.links import MAX_PENDING_CODES, IdentityLink, PairingCode
from store.api.records import Aggregate, ScopeStats, TimeRange
from store.api.stops import STOP_CHECK_S
from store.api.store import Store
from store.api.turn import TurnOpening, TurnReads
from store.cut_turns import CLIENT_NO_RESULT, INTERRUPTED_RESULT, INTERRUPTED_TEXT, INTERRUPTED_TYPE
from store.engine import (
    GROUP_BUCKETS,
    MAX_LIMIT,
    Capabilities,
    CommitStats,
    DelegatingEngine,
    Durable,
    Engine,
    ListQuery,
    Page,
    Results,
    Step,
)
from store.errors import (
    Conflict,
    ConversationBusy,
    ImportFormatError,
    InvalidInput,
    LeaseHeld,
    MessageTooLarge,
    NotFound,
    StoreError,
    StoreUnavailable,
)
from store.leases import LEASE_S, Claimed, KeyedLocks, Lease, LeaseOwner, LeaseStats, owner_of
from store.models import (
    JSON,
    SID_RE,
    SYSTEM_CONTEXT,
    Attachment,
    AuditEntry,
    Conversation,
    Kind,
    Memory,
    Message,
    MessageStatus,
    Record,
    Role,
    Scope,
    UsageEntry,
    check_text,
    validate_context,
    validate_sid,
    validate_user,
)

if TYPE_CHECKING:
    from store.factory import build_engine, open_store
    from store.legacy.migrate import MigrationReport, migrate_file
    from store.osis.client import OsisEngine
    from store.osis.server import OSIS_RPC_PATH, build_osis_app
    from store.sqlite.backup import BackupReport, backup_embedded, backup_target
    from store.sqlite.engine import DB_FILE, EmbeddedEngine
    from store.sqlite.ops import to_base36
    from store.transfer import ImportResult, copy_store, export_jsonl, import_jsonl

#: names that load their module on first use: name -> the module that defines it (``to_base36``:
#: the n-th sid as engines allocate them, for tools that write records with sids of their own)
_ON_USE = {
    "build_engine": "store.factory",
    "open_store": "store.factory",
    "MigrationReport": "store.legacy.migrate",
    "migrate_file": "store.legacy.migrate",
    "OsisEngine": "store.osis.client",
    "OSIS_RPC_PATH": "store.osis.server",
    "build_osis_app": "store.osis.server",
    "BackupReport": "store.sqlite.backup",
    "backup_embedded": "store.sqlite.backup",
    "backup_target": "store.sqlite.backup",
    "DB_FILE": "store.sqlite.engine",
    "EmbeddedEngine": "store.sqlite.engine",
    "to_base36": "store.sqlite.ops",
    "ImportResult": "store.transfer",
    "copy_store": "store.transfer",
    "export_jsonl": "store.transfer",
    "import_jsonl": "store.transfer",
}


def __getattr__(name: str) -> object:
    module = _ON_USE.get(name)
    if module is None:
        raise AttributeError(f"module 'store' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CLIENT_NO_RESULT",
    "DB_FILE",
    "GROUP_BUCKETS",
    "INTERRUPTED_RESULT",
    "INTERRUPTED_TEXT",
    "INTERRUPTED_TYPE",
    "JSON",
    "LEASE_S",
    "MAX_LIMIT",
    "MAX_PENDING_CODES",
    "MAX_TAGS",
    "MAX_TITLE_CHARS",
    "OSIS_RPC_PATH",
    "SID_RE",
    "STOP_CHECK_S",
    "SYSTEM_CONTEXT",
    "Aggregate",
    "Attachment",
    "AuditEntry",
    "BackupReport",
    "Capabilities",
    "Claimed",
    "CommitStats",
    "Conflict",
    "Conversation",
    "ConversationBusy",
    "DelegatingEngine",
    "Durable",
    "EmbeddedEngine",
    "Engine",
    "IdentityLink",
    "ImportFormatError",
    "ImportResult",
    "InvalidInput",
    "KeyedLocks",
    "Kind",
    "Lease",
    "LeaseHeld",
    "LeaseOwner",
    "LeaseStats",
    "ListQuery",
    "Memory",
    "Message",
    "MessageStatus",
    "MessageTooLarge",
    "MigrationReport",
    "NewAttachment",
    "NotFound",
    "OsisEngine",
    "Page",
    "PairingCode",
    "Record",
    "Results",
    "Role",
    "Scope",
    "ScopeStats",
    "Step",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TimeRange",
    "TurnOpening",
    "TurnReads",
    "UsageEntry",
    "attachment_bytes",
    "backup_embedded",
    "backup_target",
    "build_engine",
    "build_osis_app",
    "check_text",
    "copy_store",
    "export_jsonl",
    "import_jsonl",
    "memory_hash",
    "migrate_file",
    "now_ms",
    "open_store",
    "owner_of",
    "to_base36",
    "validate_context",
    "validate_sid",
    "validate_user",
]
