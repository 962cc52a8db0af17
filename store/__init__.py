"""The OSIS-shaped object store: models, the engine seam, engines and the domain API.

The store knows nothing of LLMs or channels.
"""

from __future__ import annotations

from store.api.store import Aggregate, ScopeStats, Store, memory_hash, now_ms
from store.engine import Engine, ListQuery, Page
from store.errors import (
    Conflict,
    ImportFormatError,
    InvalidInput,
    NotFound,
    StoreError,
    StoreUnavailable,
)
from store.models import (
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
    "Aggregate",
    "AuditEntry",
    "Conflict",
    "Conversation",
    "Engine",
    "ImportFormatError",
    "InvalidInput",
    "Kind",
    "ListQuery",
    "Memory",
    "Message",
    "MessageStatus",
    "NotFound",
    "Page",
    "Role",
    "Scope",
    "ScopeStats",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UsageEntry",
    "memory_hash",
    "now_ms",
    "validate_context",
]
