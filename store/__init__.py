"""The OSIS-shaped object store: models, the engine seam, engines and the domain API.

The store knows nothing of LLMs or channels.
"""

from __future__ import annotations

from store.api import Aggregate, ScopeStats, Store, memory_hash, now_ms
from store.api_attachments import NewAttachment, attachment_bytes
from store.cut_turns import INTERRUPTED_RESULT, INTERRUPTED_TEXT, INTERRUPTED_TYPE
from store.engine import Engine, ListQuery, Page
from store.errors import (
    Conflict,
    ImportFormatError,
    InvalidInput,
    NotFound,
    StoreError,
    StoreUnavailable,
)
from store.leases import LEASE_S, LeaseStats
from store.models import (
    Attachment,
    AuditEntry,
    Conversation,
    Kind,
    Memory,
    Message,
    MessageStatus,
    Role,
    Scope,
    UsageEntry,
    validate_context,
)

__all__ = [
    "INTERRUPTED_RESULT",
    "INTERRUPTED_TEXT",
    "INTERRUPTED_TYPE",
    "LEASE_S",
    "Aggregate",
    "Attachment",
    "AuditEntry",
    "Conflict",
    "Conversation",
    "Engine",
    "ImportFormatError",
    "InvalidInput",
    "Kind",
    "LeaseStats",
    "ListQuery",
    "Memory",
    "Message",
    "MessageStatus",
    "NewAttachment",
    "NotFound",
    "Page",
    "Role",
    "Scope",
    "ScopeStats",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UsageEntry",
    "attachment_bytes",
    "memory_hash",
    "now_ms",
    "validate_context",
]
