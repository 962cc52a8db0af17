"""Messages: append, change, read, the history window, paging, search, supersede: ``store.messages``.

A turn stores its user message with ``store.turns.open`` (one batch with the lease and the reads);
everything else about messages is here.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable

from store.api.base import Rules, check_limit
from store.api.conversations import Conversations
from store.engine import Engine, GetStep, ListQuery, ListStep, Page
from store.errors import InvalidInput, NotFound
from store.models import Conversation, Kind, Message, MessageStatus, Scope, validate_sid


class Messages:
    """The messages of conversations, checked by the message rules; ``list`` reads the conversation
    (its clear boundary) from ``conversations``."""

    def __init__(self, engine: Engine, rules: Rules, conversations: Conversations) -> None:
        self.engine = engine
        self.rules = rules
        self.conversations = conversations

    async def append(self, scope: Scope, message: Message, *, request_key: str | None = None) -> Message:
        """Append ``message`` (its conversation, role, content, channel and details): the store assigns
        its sid, timestamps and ``seq`` (gap-free per conversation) and answers it as stored."""
        fields = self.rules.message_fields(message)
        rec = await self.engine.create(Kind.MESSAGE, scope, fields, request_key=request_key)
        return Message.from_record(rec)

    async def update(self, scope: Scope, sid: str, **fields: object) -> Message:
        """Change a stored message (final content, status). ``seq`` and ``conversation_id`` are fixed."""
        fields.pop("seq", None)
        fields.pop("conversation_id", None)
        if "content" in fields:
            self.rules.check_text(fields["content"])
        if "status" in fields and fields["status"] not in MessageStatus._value2member_map_:
            raise InvalidInput(f"invalid status {fields['status']!r}")
        rec = await self.engine.update(Kind.MESSAGE, scope, validate_sid(sid), dict(fields))
        if rec is None:
            raise NotFound("message", sid)
        return Message.from_record(rec)

    async def get(self, scope: Scope, sid: str) -> Message:
        rec = await self.engine.get(Kind.MESSAGE, scope, validate_sid(sid))
        if rec is None:
            raise NotFound("message", sid)
        return Message.from_record(rec)

    async def history(self, scope: Scope, conversation_id: str, limit: int = 50) -> list[Message]:
        """The last ``limit`` messages after the clear boundary, oldest first.

        When the conversation has a compaction summary, the window starts at the summary message.
        """
        validate_sid(conversation_id)
        query = ListQuery(
            filters={"conversation_id": conversation_id},
            order_by="seq",
            descending=True,
            limit=check_limit(limit),
        )
        # The conversation (for its boundaries) and the last ``limit`` messages are read in one batch,
        # so a remote engine pays one round trip, not two. The last ``limit`` after the boundary are
        # exactly the last ``limit`` overall minus those at or below it: if any of those is cut,
        # everything above the boundary is already among them.
        get_conv = GetStep(Kind.CONVERSATION, conversation_id)
        list_messages = ListStep(Kind.MESSAGE, query)
        results = await self.engine.batch(scope, [get_conv, list_messages])
        conv_rec = results.of(get_conv)
        if conv_rec is None:
            raise NotFound("conversation", conversation_id)
        floor = Conversation.from_record(conv_rec).window_floor
        page = results.of(list_messages)
        return [Message.from_record(r) for r in reversed(page.items) if int(r["seq"]) > floor]

    async def list(
        self,
        scope: Scope,
        conversation_id: str,
        *,
        limit: int = 100,
        cursor: str | None = None,
        include_archived: bool = True,
        descending: bool = False,
    ) -> Page[Message]:
        """Page through a conversation in ``seq`` order, archived (cleared) turns included by default."""
        conv = await self.conversations.get(scope, conversation_id)
        filters: dict[str, object] = {"conversation_id": conversation_id}
        if not include_archived and conv.clear_seq:
            filters["seq__gt"] = conv.clear_seq
        page = await self.engine.list(
            Kind.MESSAGE,
            scope,
            ListQuery(
                filters=filters,
                order_by="seq",
                descending=descending,
                limit=check_limit(limit),
                cursor=cursor,
            ),
        )
        return Page([Message.from_record(r) for r in page.items], page.next_cursor)

    async def search(self, scope: Scope, text: str, *, limit: int = 20) -> builtins.list[Message]:
        """Messages of this scope whose content matches ``text``, most relevant first."""
        if not text.strip():
            return []
        page = await self.engine.list(Kind.MESSAGE, scope, ListQuery(text=text, limit=check_limit(limit)))
        return [Message.from_record(r) for r in page.items]

    async def supersede(self, scope: Scope, sids: Iterable[str], turn_id: str) -> None:
        """Mark messages as replaced by the turn ``turn_id`` (they stay stored, never sent again)."""
        if not turn_id:
            raise InvalidInput("a superseding turn id is required")
        for sid in sids:
            await self.update(scope, sid, superseded_by=turn_id)
