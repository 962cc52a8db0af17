"""The async store API the agent uses: domain operations on top of one :class:`~store.engine.Engine`.

Every call takes a :class:`~store.models.Scope`; ids from another user or context raise
:class:`~store.errors.NotFound` exactly like missing ones. Input is validated here, once, for every
engine.
"""

from __future__ import annotations

from collections.abc import Iterable

from store.api.attachments import AttachmentsMixin
from store.api.base import (
    MAX_TAGS,
    MAX_TAIL_DIGEST_CHARS,
    MAX_TITLE_CHARS,
    check_limit,
    memory_hash,
    now_ms,
    store_fields,
)
from store.api.links import LinksMixin
from store.api.memories import MemoriesMixin
from store.api.records import Aggregate, RecordsMixin, ScopeStats, TimeRange
from store.api.stops import StopsMixin
from store.api.turn import TurnMixin
from store.engine import GetStep, ListQuery, ListStep, Page
from store.errors import Conflict, InvalidInput, NotFound
from store.models import (
    SYSTEM_CONTEXT,
    Conversation,
    Kind,
    Message,
    MessageStatus,
    Scope,
    validate_sid,
    validate_user,
)

__all__ = [
    "MAX_TAGS",
    "MAX_TITLE_CHARS",
    "Aggregate",
    "ScopeStats",
    "Store",
    "TimeRange",
    "memory_hash",
    "now_ms",
]


class Store(MemoriesMixin, RecordsMixin, TurnMixin, StopsMixin, LinksMixin, AttachmentsMixin):
    """Domain operations over an engine. An async context manager that opens and closes the engine.

    Conversations and messages live here; memories, audit/usage, state/leases, the start of a turn,
    identity links and attachments in their mixins.
    """

    async def __aenter__(self) -> Store:
        await self.engine.open()
        return self

    # -- conversations -------------------------------------------------------------------------

    async def create_conversation(
        self,
        scope: Scope,
        title: str = "",
        *,
        channel: str = "",
        tags: Iterable[str] = (),
        is_group: bool = False,
        request_key: str | None = None,
    ) -> Conversation:
        rec = Conversation(
            title=self._title(title),
            tags=self._tags(tags),
            last_channel=channel,
            is_group=is_group,
        ).to_record()
        out = await self.engine.create(Kind.CONVERSATION, scope, store_fields(rec), request_key=request_key)
        return Conversation.from_record(out)

    async def get_conversation(self, scope: Scope, sid: str) -> Conversation:
        rec = await self.engine.get(Kind.CONVERSATION, scope, validate_sid(sid))
        if rec is None:
            raise NotFound("conversation", sid)
        return Conversation.from_record(rec)

    async def list_conversations(
        self,
        scope: Scope,
        *,
        limit: int = 50,
        cursor: str | None = None,
        archived: bool | None = False,
        text: str | None = None,
    ) -> Page[Conversation]:
        """Most recently updated first. ``archived``: False hides archived ones, True shows only
        them, None shows all. ``text``: only conversations whose title has a word of it, most
        relevant first, in one page (the engines' text search has no cursor)."""
        filters: dict[str, object] = {}
        if archived is not None:
            filters["is_archived"] = archived
        if text is not None and not text.strip():
            text = None
        if text is not None and cursor is not None:
            raise InvalidInput("a text search has no further pages")
        page = await self.engine.list(
            Kind.CONVERSATION,
            scope,
            ListQuery(
                filters=filters,
                order_by="updated_at",
                descending=True,
                limit=check_limit(limit),
                cursor=cursor,
                text=text,
            ),
        )
        return Page([Conversation.from_record(r) for r in page.items], page.next_cursor)

    async def rename_conversation(self, scope: Scope, sid: str, title: str) -> Conversation:
        return await self._update_conversation(scope, sid, {"title": self._title(title)})

    async def archive_conversation(self, scope: Scope, sid: str, archived: bool = True) -> Conversation:
        return await self._update_conversation(scope, sid, {"is_archived": bool(archived)})

    async def tag_conversation(self, scope: Scope, sid: str, tags: Iterable[str]) -> Conversation:
        return await self._update_conversation(scope, sid, {"tags": list(self._tags(tags))})

    async def delete_conversation(self, scope: Scope, sid: str) -> None:
        """Hard delete of the conversation and all its messages (the privacy delete)."""
        if not await self.engine.delete(Kind.CONVERSATION, scope, validate_sid(sid)):
            raise NotFound("conversation", sid)

    async def clear_conversation(self, scope: Scope, sid: str) -> Conversation:
        """Move the clear boundary to the last message: earlier turns stay stored (archived) but
        ``history`` no longer returns them."""
        conv = await self.get_conversation(scope, sid)
        last = await self._last_seq(scope, sid)
        return await self._update_conversation(scope, sid, {"clear_seq": max(last, conv.clear_seq)})

    async def set_conversation_model(self, scope: Scope, sid: str, model: str) -> Conversation:
        """The model this conversation uses from now on ("" goes back to the configured one)."""
        if not isinstance(model, str) or len(model) > 200 or not model.isprintable():
            raise InvalidInput("invalid model name")
        return await self._update_conversation(scope, sid, {"model": model.strip()})

    async def users_with_data(self, user: str) -> list[str]:
        """The contexts in which ``user`` holds at least one record (of any kind), sorted."""
        found = []
        for context in await self.engine.contexts():
            if context == SYSTEM_CONTEXT:
                continue
            scope = Scope(context, user)
            for kind in Kind:
                if await self.engine.count(kind, scope):
                    found.append(context)
                    break
        return found

    async def rename_user(self, old: str, new: str, *, merge: bool = False) -> dict[str, dict[str, int]]:
        """Move every record of ``old`` to ``new`` in every context (each context atomically) and point
        ``old``'s identity links at ``new``; per context, the counts moved.

        Refused with Conflict, before anything moves, when ``new`` already has records and ``merge``
        is false (a user with nothing to move is no conflict: a repeated rename does nothing)."""
        validate_user(old)
        validate_user(new)
        if old == new:
            raise InvalidInput("the two user names are the same")
        contexts = await self.users_with_data(old)
        if contexts and not merge:
            taken = await self.users_with_data(new)
            if taken:
                raise Conflict(f"user {new!r} already has data (in {', '.join(taken)}): add --merge to merge")
        moved: dict[str, dict[str, int]] = {}
        for context in contexts:
            counts = await self.engine.rename_user(context, old, new, merge=merge)
            if counts:
                moved[context] = counts
        await self.relink(old, new)
        return moved

    async def set_summary_boundary(self, scope: Scope, sid: str, summary_seq: int) -> Conversation:
        """Record that the summary message at ``summary_seq`` stands for every earlier message."""
        return await self._update_conversation(scope, sid, {"summary_seq": int(summary_seq)})

    async def set_tail_digest(self, scope: Scope, sid: str, digest: str) -> Conversation:
        """The conversation's ``tail_digest`` (the OpenAI endpoint's history match)."""
        if not isinstance(digest, str) or len(digest) > MAX_TAIL_DIGEST_CHARS or not digest.isalnum():
            raise InvalidInput("invalid tail digest")
        return await self._update_conversation(scope, sid, {"tail_digest": digest})

    async def find_by_tail_digest(self, scope: Scope, digest: str) -> Conversation | None:
        """The most recently updated conversation of the scope whose ``tail_digest`` is ``digest``:
        one indexed read (the ``conversations_tail`` index on the embedded engine)."""
        if not digest:
            return None
        page = await self.engine.list(
            Kind.CONVERSATION,
            scope,
            ListQuery(filters={"tail_digest": digest}, order_by="updated_at", descending=True, limit=1),
        )
        return Conversation.from_record(page.items[0]) if page.items else None

    async def supersede(self, scope: Scope, sids: Iterable[str], turn_id: str) -> None:
        """Mark messages as replaced by the turn ``turn_id`` (they stay stored, never sent again)."""
        if not turn_id:
            raise InvalidInput("a superseding turn id is required")
        for sid in sids:
            await self.update_message(scope, sid, superseded_by=turn_id)

    async def _update_conversation(self, scope: Scope, sid: str, fields: dict[str, object]) -> Conversation:
        rec = await self.engine.update(Kind.CONVERSATION, scope, validate_sid(sid), fields)
        if rec is None:
            raise NotFound("conversation", sid)
        return Conversation.from_record(rec)

    async def _last_seq(self, scope: Scope, conversation_id: str) -> int:
        page = await self.engine.list(
            Kind.MESSAGE,
            scope,
            ListQuery(filters={"conversation_id": conversation_id}, order_by="seq", descending=True, limit=1),
        )
        return int(page.items[0]["seq"]) if page.items else 0

    # -- messages ------------------------------------------------------------------------------

    async def append_message(
        self, scope: Scope, message: Message, *, request_key: str | None = None
    ) -> Message:
        """Append ``message`` (its conversation, role, content, channel and details): the store assigns
        its sid, timestamps and ``seq`` (gap-free per conversation) and answers it as stored."""
        fields = self._message_fields(message)
        rec = await self.engine.create(Kind.MESSAGE, scope, fields, request_key=request_key)
        return Message.from_record(rec)

    async def update_message(self, scope: Scope, sid: str, **fields: object) -> Message:
        """Change a stored message (final content, status). ``seq`` and ``conversation_id`` are fixed."""
        fields.pop("seq", None)
        fields.pop("conversation_id", None)
        if "content" in fields:
            self.check_text(fields["content"])
        if "status" in fields and fields["status"] not in MessageStatus._value2member_map_:
            raise InvalidInput(f"invalid status {fields['status']!r}")
        rec = await self.engine.update(Kind.MESSAGE, scope, validate_sid(sid), dict(fields))
        if rec is None:
            raise NotFound("message", sid)
        return Message.from_record(rec)

    async def get_message(self, scope: Scope, sid: str) -> Message:
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

    async def list_messages(
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
        conv = await self.get_conversation(scope, conversation_id)
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

    async def search_messages(self, scope: Scope, text: str, *, limit: int = 20) -> list[Message]:
        """Messages of this scope whose content matches ``text``, most relevant first."""
        if not text.strip():
            return []
        page = await self.engine.list(Kind.MESSAGE, scope, ListQuery(text=text, limit=check_limit(limit)))
        return [Message.from_record(r) for r in page.items]
