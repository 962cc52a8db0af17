"""What the parts of the store API share: input validation (:class:`Rules`, titles, tags, limits) and
the clock. Plain functions and one small value, handed to each part that needs them.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable

from store.engine import MAX_LIMIT
from store.errors import InvalidInput
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


class Rules:
    """The input rules every part checks against (the longest message); one instance per Store, shared
    by the parts that validate text, so a Store built with ``max_message_chars`` applies it everywhere."""

    def __init__(self, max_message_chars: int = 32_000) -> None:
        self.max_message_chars = max_message_chars

    def check_text(self, content: object, *, what: str = "message") -> str:
        """``content`` checked against the store's rules (:func:`store.models.check_text`)."""
        return check_text(content, self.max_message_chars, what=what)

    def message_fields(self, message: Message) -> Record:
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


def check_title(title: str) -> str:
    if not isinstance(title, str):
        raise InvalidInput("title must be text")
    title = title.strip()
    if len(title) > MAX_TITLE_CHARS:
        raise InvalidInput(f"title longer than {MAX_TITLE_CHARS} characters")
    if any(not ch.isprintable() for ch in title):
        raise InvalidInput("title contains control characters")
    return title


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(str(t).strip() for t in tags if str(t).strip()))
    if len(out) > MAX_TAGS or any(len(t) > 64 for t in out):
        raise InvalidInput(f"at most {MAX_TAGS} tags of at most 64 characters")
    return out
