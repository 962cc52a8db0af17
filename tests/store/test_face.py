"""The store's face: the names outsiders may import, pinned, and the engines loading on first use.

Outside ``store/`` only ``from store import ...`` is allowed (ruff's banned-api, see pyproject.toml); a
name added to or dropped from the face is a change of the store's public interface, made on purpose here.
"""

from __future__ import annotations

import subprocess
import sys

import store

FACE = [
    "Aggregate",
    "Attachment",
    "AuditEntry",
    "BackupReport",
    "CLIENT_NO_RESULT",
    "Capabilities",
    "Claimed",
    "Conflict",
    "Conversation",
    "DB_FILE",
    "CommitStats",
    "DelegatingEngine",
    "Durable",
    "GROUP_BUCKETS",
    "EmbeddedEngine",
    "Engine",
    "INTERRUPTED_RESULT",
    "INTERRUPTED_TEXT",
    "INTERRUPTED_TYPE",
    "KeyedLocks",
    "IdentityLink",
    "ImportFormatError",
    "ImportResult",
    "InvalidInput",
    "JSON",
    "Kind",
    "LEASE_S",
    "Lease",
    "LeaseHeld",
    "LeaseOwner",
    "LeaseStats",
    "MessageTooLarge",
    "ConversationBusy",
    "ListQuery",
    "MAX_LIMIT",
    "MAX_PENDING_CODES",
    "MAX_TAGS",
    "MAX_TITLE_CHARS",
    "Memory",
    "Message",
    "MessageStatus",
    "MigrationReport",
    "NewAttachment",
    "NotFound",
    "OSIS_RPC_PATH",
    "OsisEngine",
    "Page",
    "PairingCode",
    "Record",
    "Results",
    "Role",
    "SID_RE",
    "STOP_CHECK_S",
    "SYSTEM_CONTEXT",
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


def test_the_face_exports_exactly_the_pinned_names() -> None:
    assert sorted(store.__all__) == sorted(FACE)


def test_every_exported_name_resolves() -> None:
    for name in FACE:
        assert getattr(store, name) is not None, name


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        store.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("store.no_such_name resolved")


def test_importing_the_face_loads_no_engine_and_no_server() -> None:
    code = (
        "import sys, store\n"
        "heavy = ['store.sqlite.engine', 'store.osis.client', 'store.osis.server', 'uvicorn', 'sqlite3']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
