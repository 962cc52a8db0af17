"""Attachments: the bytes of an image sent with a user message, stored apart from the message text.

Why apart: the history window is read on every turn; an image of a few megabytes inside the message
record would be read (and decoded) with it each time. An :class:`~store.models.Attachment` is read only
when a turn sends the image to the model or a page shows it. It belongs to a conversation and is
deleted with it (in the engine's own delete, like the messages), is scoped like every object, and is
exported and imported like every object.

Writing: :meth:`Attachments.add` (``store.attachments.add``) stores all of a message's attachments in one
engine batch (one transaction on the embedded engine) BEFORE the message, whose ``attachments``
descriptor then names their sids; when the message cannot be stored the caller deletes them again
(:meth:`Attachments.drop`). See docs/store.md for the one window this leaves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from store.api.base import store_fields
from store.engine import CreateStep, DeleteStep, Engine
from store.errors import InvalidInput, NotFound
from store.models import Attachment, Kind, Scope, validate_sid

#: the default cap of one attachment's bytes (``[agent] max_attachment_bytes``)
DEFAULT_MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024
MAX_NAME_CHARS = 200


@dataclass(frozen=True, slots=True)
class NewAttachment:
    """What a channel hands in: the checked bytes of one image and what was learned about them."""

    data: bytes
    mime: str
    name: str = ""
    width: int = 0
    height: int = 0
    kind: str = "image"


class Attachments:
    """The images of user messages, each an ``AgentAttachment`` record beside its message."""

    def __init__(self, engine: Engine, *, max_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES) -> None:
        self.engine = engine
        #: the cap of one attachment's bytes (``[agent] max_attachment_bytes``; tests lower it)
        self.max_bytes = max_bytes

    async def add(
        self, scope: Scope, conversation_id: str, items: list[NewAttachment], *, channel: str = ""
    ) -> list[Attachment]:
        """Store every item, all or nothing on the embedded engine (one batch); answers them in order."""
        validate_sid(conversation_id)
        steps = [
            CreateStep(Kind.ATTACHMENT, self._attachment_fields(conversation_id, a, channel)) for a in items
        ]
        if not steps:
            return []
        created = await self.engine.batch(scope, list(steps))
        return [Attachment.from_record(rec) for rec in created if isinstance(rec, dict)]

    async def drop(self, scope: Scope, sids: list[str]) -> None:
        """Delete attachments whose message was never stored (the compensation of a failed turn)."""
        if sids:
            await self.engine.batch(scope, [DeleteStep(Kind.ATTACHMENT, validate_sid(s)) for s in sids])

    async def get(self, scope: Scope, sid: str) -> Attachment:
        rec = await self.engine.get(Kind.ATTACHMENT, scope, validate_sid(sid))
        if rec is None:
            raise NotFound("attachment", sid)
        return Attachment.from_record(rec)

    def _attachment_fields(
        self, conversation_id: str, item: NewAttachment, channel: str
    ) -> dict[str, object]:
        if not isinstance(item.data, bytes) or not item.data:
            raise InvalidInput("the attachment is empty")
        if len(item.data) > self.max_bytes:
            raise InvalidInput(
                f"the attachment is too large: {len(item.data)} bytes, the limit is {self.max_bytes}"
            )
        name = (item.name or "").strip()[:MAX_NAME_CHARS]
        if not name.isprintable():
            name = ""
        rec = Attachment(
            conversation_id=conversation_id,
            kind=item.kind,
            name=name,
            mime=item.mime,
            size=len(item.data),
            width=item.width,
            height=item.height,
            sha256=hashlib.sha256(item.data).hexdigest(),
            channel=channel,
            data=base64.b64encode(item.data).decode("ascii"),
        ).to_record()
        return store_fields(rec)


def attachment_bytes(att: Attachment) -> bytes:
    """The stored bytes; a record whose data does not decode (an edited export) is InvalidInput."""
    try:
        return base64.b64decode(att.data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"attachment {att.sid} holds no valid data") from None
