"""Shared base of the store API: the engine, lifecycle and input validation.

:class:`~store.api.Store` is assembled from this base and one mixin per concept
(``api_memories``, ``api_records``, ``api_state``); each mixin only uses what this base provides.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable

from store.api.fallbacks import with_fallbacks
from store.engine import MAX_LIMIT, Engine
from store.errors import InvalidInput
from store.leases import LEASE_S, KeyedLocks, LeaseStats, this_process
from store.models import BASE_FIELDS, Message, MessageStatus, Record, Role, check_text, validate_sid

MAX_TITLE_CHARS = 200
#: a conversation's ``tail_digest``: letters and digits, at most this many (the /v1 history match)
MAX_TAIL_DIGEST_CHARS = 128
MAX_TAGS = 32
_WS_RE = re.compile(r"\s+")


def now_ms() -> int:
    return int(time.time() * 1000)


def memory_hash(content: str) -> str:
    """Dedupe key: case- and whitespace-insensitive SHA-256 of the content."""
    norm = _WS_RE.sub(" ", content.strip().lower())
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()[:32]


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or limit < 1 or limit > MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def store_fields(rec: dict[str, object]) -> dict[str, object]:
    """A record without the store-owned fields (the engine sets those)."""
    return {k: v for k, v in rec.items() if k not in BASE_FIELDS}


class StoreBase:
    """The engine, the lifecycle (an async context manager that opens and closes the engine) and
    the validation every operation shares."""

    def __init__(self, engine: Engine, *, max_message_chars: int = 32_000, lease_s: float = LEASE_S) -> None:
        #: the engine, behind the fallbacks for any capability it lacks (see ``store.api.fallbacks``)
        self.engine = with_fallbacks(engine)
        self.max_message_chars = max_message_chars
        #: how long a held turn lock outlives its holder's last renewal (tests shorten it)
        self.lease_s = lease_s
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: this process, recorded with every lease it takes (see store.leases)
        self._owner = this_process()
        #: one lock per conversation with a turn running or waiting in this process
        self._local_locks = KeyedLocks()
        #: lease and cut-turn counters, shown in /metrics
        self.lease_stats = LeaseStats()

    async def __aenter__(self) -> StoreBase:
        await self.engine.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.aclose()

    async def aclose(self) -> None:
        await self.engine.aclose()

    # -- validation ----------------------------------------------------------------------------

    def check_text(self, content: object, *, what: str = "message") -> str:
        """``content`` checked against the store's rules (:func:`store.models.check_text`)."""
        return check_text(content, self.max_message_chars, what=what)

    def _message_fields(self, message: Message) -> Record:
        """A new message's fields, validated (the engine adds sid, timestamps and seq)."""
        if message.role not in Role._value2member_map_:
            raise InvalidInput(f"invalid role {message.role!r}")
        if message.status not in MessageStatus._value2member_map_:
            raise InvalidInput(f"invalid status {message.status!r}")
        self.check_text(message.content)
        if message.tool_calls:
            try:
                if not isinstance(json.loads(message.tool_calls), list):
                    raise ValueError
            except ValueError:
                raise InvalidInput("tool_calls must be a JSON list") from None
        validate_sid(message.conversation_id)
        rec = message.to_record()
        rec["role"] = Role(message.role).value
        rec["status"] = MessageStatus(message.status).value
        rec["timestamp"] = message.timestamp or now_ms()
        return store_fields(rec)

    @staticmethod
    def _title(title: str) -> str:
        if not isinstance(title, str):
            raise InvalidInput("title must be text")
        title = title.strip()
        if len(title) > MAX_TITLE_CHARS:
            raise InvalidInput(f"title longer than {MAX_TITLE_CHARS} characters")
        if any(not ch.isprintable() for ch in title):
            raise InvalidInput("title contains control characters")
        return title

    @staticmethod
    def _tags(tags: Iterable[str]) -> tuple[str, ...]:
        out = tuple(dict.fromkeys(str(t).strip() for t in tags if str(t).strip()))
        if len(out) > MAX_TAGS or any(len(t) > 64 for t in out):
            raise InvalidInput(f"at most {MAX_TAGS} tags of at most 64 characters")
        return out
