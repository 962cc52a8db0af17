"""The OSIS object model of domain ``ai`` (SPEC 7.1), free of engine details.

Objects travel through the engine seam as plain JSON records (``dict``); these dataclasses are the typed
view the rest of the code uses. ``to_record``/``from_record`` convert, keeping unknown fields in
``extra`` so that a record written by a newer version survives a round trip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar, Self, TypeAlias

from store.errors import InvalidInput, MessageTooLarge

JSON: TypeAlias = Any
Record: TypeAlias = dict[str, JSON]

CONTEXT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SID_RE = re.compile(r"^[a-z0-9]{1,32}$")
#: the reserved context of deployment-wide records (Telegram links, pairing codes). A context name
#: cannot start with ``_``, so no user's context can collide with it; channels never accept it.
SYSTEM_CONTEXT = "_system"


def validate_context(name: str) -> str:
    """A context name a user may choose (the reserved :data:`SYSTEM_CONTEXT` is refused)."""
    if not isinstance(name, str) or not CONTEXT_RE.match(name):
        raise InvalidInput(
            f"invalid context name {name!r}: use 1-64 of a-z 0-9 _ - starting with a letter or digit"
        )
    return name


def validate_stored_context(name: str) -> str:
    """A context the store holds: a user's, or the reserved :data:`SYSTEM_CONTEXT`."""
    return name if name == SYSTEM_CONTEXT else validate_context(name)


def validate_sid(sid: str) -> str:
    if not isinstance(sid, str) or not SID_RE.match(sid):
        raise InvalidInput(f"invalid id {sid!r}")
    return sid


def check_text(content: object, limit: int, *, what: str = "message") -> str:
    """The store's rules for a message's (or a memory's) text, the one check everyone calls: the
    store on every write, the agent before a turn, the web route for its early 400/413."""
    if not isinstance(content, str):
        raise InvalidInput(f"The {what} must be text.")
    if len(content) > limit:
        raise MessageTooLarge(f"The {what} is too long: {len(content)} characters, the limit is {limit}.")
    if "\x00" in content:
        raise InvalidInput(f"The {what} contains binary data.")
    return content


def validate_user(user_id: str) -> str:
    if not isinstance(user_id, str) or not user_id or len(user_id) > 128 or not user_id.isprintable():
        raise InvalidInput(f"invalid user id {user_id!r}")
    return user_id


@dataclass(frozen=True, slots=True)
class Scope:
    """Who and where: every stored object lives in exactly one (context, user) scope."""

    context: str
    user_id: str

    def __post_init__(self) -> None:
        validate_stored_context(self.context)
        validate_user(self.user_id)


class Kind(StrEnum):
    """Object kinds; the value is the OSIS object name (lower-cased in RPC method names)."""

    CONVERSATION = "AgentConversation"
    MESSAGE = "AgentMessage"
    MEMORY = "AgentMemory"
    AUDIT = "AgentAuditEntry"
    USAGE = "AgentUsageEntry"
    #: small per-scope key/value state (active conversation, channel offsets); hero-agent extension
    STATE = "AgentState"
    #: an image (or other file) sent with a user message, stored apart from the message text
    ATTACHMENT = "AgentAttachment"

    @property
    def rpc_name(self) -> str:
        return self.value.lower()


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class MessageStatus(StrEnum):
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"
    ERROR = "error"


#: fields every record carries, owned by the store
BASE_FIELDS = ("sid", "context", "user_id", "created_at", "updated_at")


@dataclass(slots=True)
class StoredObject:
    KIND: ClassVar[Kind]

    sid: str = ""
    context: str = ""
    user_id: str = ""
    created_at: int = 0
    updated_at: int = 0
    extra: dict[str, JSON] = field(default_factory=dict)

    def to_record(self) -> Record:
        rec: Record = {name: getattr(self, name) for name in _field_order(type(self))}
        for k, v in self.extra.items():
            rec.setdefault(k, v)
        return rec

    @classmethod
    def from_record(cls, rec: Record) -> Self:
        names = _field_names(cls)
        kwargs: dict[str, JSON] = {}
        extra: dict[str, JSON] = {}
        for k, v in rec.items():
            (kwargs if k in names else extra)[k] = v
        tags = kwargs.get("tags")
        if isinstance(tags, list):
            kwargs["tags"] = tuple(tags)
        obj = cls(**kwargs)
        obj.extra = extra
        return obj


_FIELDS: dict[type, tuple[tuple[str, ...], frozenset[str]]] = {}


def _fields_of(cls: type) -> tuple[tuple[str, ...], frozenset[str]]:
    """The record fields of a model class (``extra`` excluded), in declaration order and as a set,
    computed once per class: decoding a history window converts many records, and
    ``dataclasses.fields`` is slow."""
    known = _FIELDS.get(cls)
    if known is None:
        order = tuple(f.name for f in fields(cls) if f.name != "extra")
        known = _FIELDS[cls] = (order, frozenset(order))
    return known


def _field_order(cls: type) -> tuple[str, ...]:
    return _fields_of(cls)[0]


def _field_names(cls: type) -> frozenset[str]:
    return _fields_of(cls)[1]


@dataclass(slots=True)
class Conversation(StoredObject):
    KIND: ClassVar[Kind] = Kind.CONVERSATION

    title: str = ""
    message_count: int = 0
    is_archived: bool = False
    tags: tuple[str, ...] = ()
    last_channel: str = ""
    #: messages with seq <= clear_seq are archived behind a /clear boundary (never sent to the model)
    clear_seq: int = 0
    #: a persisted compaction summary replaces the messages with seq <= summary_seq in the model's view
    summary_seq: int = 0
    #: group scopes: the conversation belongs to a group, personal memories are never recalled
    is_group: bool = False
    #: the model chosen for this conversation with ``/model NAME`` ("": the configured ``llm.model``)
    model: str = ""
    #: the OpenAI-compatible endpoint's chained digest of the user and assistant texts its clients saw
    #: (``channels/web/openai/history.py``): a stateless client's next request, whose history digests
    #: the same, continues this conversation ("": none, e.g. not an API conversation). Indexed.
    tail_digest: str = ""

    @property
    def window_floor(self) -> int:
        """The model's view starts after this seq: the clear boundary, or the summary message itself."""
        return max(self.clear_seq, self.summary_seq - 1 if self.summary_seq else 0)

    def to_record(self) -> Record:
        rec = StoredObject.to_record(self)
        rec["tags"] = list(self.tags)
        return rec


@dataclass(slots=True)
class Message(StoredObject):
    KIND: ClassVar[Kind] = Kind.MESSAGE

    conversation_id: str = ""
    seq: int = 0
    role: str = Role.USER.value
    content: str = ""
    channel: str = ""
    timestamp: int = 0
    #: JSON text: list of {"id", "name", "arguments"} (arguments is JSON text)
    tool_calls: str = ""
    tool_call_id: str = ""
    #: tool name for role=tool messages
    name: str = ""
    sender: str = ""
    status: str = MessageStatus.COMPLETE.value
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: "summary" for compaction summaries, "" for ordinary turns
    message_type: str = ""
    #: JSON text: what came with the message besides its text, a list of small descriptors:
    #: images ``{"kind": "image", "id", "name", "mime", "width", "height", "size"}`` (``id`` is the
    #: :class:`Attachment`'s sid) and a transcribed voice message ``{"kind": "voice", "mime", "size",
    #: "duration_s"}`` (its audio is not kept); "" when the message is text only
    attachments: str = ""
    #: the turn that wrote this message (the OpenAI endpoint's completion id is ``chatcmpl-<turn_id>``)
    turn_id: str = ""
    #: the turn that replaced this message (a retry, regenerate or edit: ``agent/rerun.py``); a
    #: superseded message stays stored and exported but is never sent to the model again. "": current
    superseded_by: str = ""


@dataclass(slots=True)
class Memory(StoredObject):
    KIND: ClassVar[Kind] = Kind.MEMORY

    content: str = ""
    kind: str = "fact"
    source_conversation_id: str = ""
    source_channel: str = ""
    hash: str = ""


@dataclass(slots=True)
class AuditEntry(StoredObject):
    KIND: ClassVar[Kind] = Kind.AUDIT

    tool: str = ""
    arguments: str = ""
    result_summary: str = ""
    ok: bool = True
    error: str = ""
    duration_ms: float = 0.0
    conversation_id: str = ""
    channel: str = ""


@dataclass(slots=True)
class UsageEntry(StoredObject):
    KIND: ClassVar[Kind] = Kind.USAGE

    provider: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    conversation_id: str = ""
    channel: str = ""
    ok: bool = True


@dataclass(slots=True)
class StateEntry(StoredObject):
    KIND: ClassVar[Kind] = Kind.STATE

    key: str = ""
    value: str = ""


@dataclass(slots=True)
class Attachment(StoredObject):
    """The bytes of one file a user sent with a message (an image), bounded in size by the store's
    ``max_attachment_bytes``. Kept apart from the message so that reading history never reads them;
    deleted with its conversation."""

    KIND: ClassVar[Kind] = Kind.ATTACHMENT

    conversation_id: str = ""
    #: "image"
    kind: str = "image"
    name: str = ""
    mime: str = ""
    size: int = 0
    width: int = 0
    height: int = 0
    #: hex SHA-256 of the bytes
    sha256: str = ""
    channel: str = ""
    #: the bytes, base64 (standard alphabet, padded): JSON-safe on every engine and in exports
    data: str = ""


MODEL_FOR_KIND: dict[Kind, type[StoredObject]] = {
    Kind.CONVERSATION: Conversation,
    Kind.MESSAGE: Message,
    Kind.MEMORY: Memory,
    Kind.AUDIT: AuditEntry,
    Kind.USAGE: UsageEntry,
    Kind.STATE: StateEntry,
    Kind.ATTACHMENT: Attachment,
}
