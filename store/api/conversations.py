"""Conversations: create, read, list, rename, archive, tag, clear, delete, and the fields the agent
keeps on one (its model, its summary boundary, its tail digest): ``store.conversations``.

Every call takes a :class:`~store.models.Scope`; ids from another user or context raise
:class:`~store.errors.NotFound` exactly like missing ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from store.api.base import MAX_TAIL_DIGEST_CHARS, check_limit, check_tags, check_title, store_fields
from store.engine import Engine, ListQuery, Page
from store.errors import InvalidInput, NotFound
from store.models import Conversation, Kind, Scope, validate_sid


class Conversations:
    """The conversation records; their messages are ``store.messages``."""

    def __init__(self, engine: Engine, renaming: Callable[[Scope, str], None] | None = None) -> None:
        self.engine = engine
        #: told before a rename is written (the Store's: an open turn drops its pending auto-title)
        self._renaming = renaming

    async def create(
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
            title=check_title(title),
            tags=check_tags(tags),
            last_channel=channel,
            is_group=is_group,
        ).to_record()
        out = await self.engine.create(Kind.CONVERSATION, scope, store_fields(rec), request_key=request_key)
        return Conversation.from_record(out)

    async def get(self, scope: Scope, sid: str) -> Conversation:
        rec = await self.engine.get(Kind.CONVERSATION, scope, validate_sid(sid))
        if rec is None:
            raise NotFound("conversation", sid)
        return Conversation.from_record(rec)

    async def list(
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

    async def rename(self, scope: Scope, sid: str, title: str) -> Conversation:
        """Give the conversation ``title``; a turn of it open in this process then keeps it (its
        auto-title is dropped, see ``Turns.renaming``)."""
        checked = check_title(title)
        if self._renaming is not None:
            self._renaming(scope, validate_sid(sid))
        return await self._update(scope, sid, {"title": checked})

    async def archive(self, scope: Scope, sid: str, archived: bool = True) -> Conversation:
        return await self._update(scope, sid, {"is_archived": bool(archived)})

    async def tag(self, scope: Scope, sid: str, tags: Iterable[str]) -> Conversation:
        return await self._update(scope, sid, {"tags": list(check_tags(tags))})

    async def delete(self, scope: Scope, sid: str) -> None:
        """Hard delete of the conversation and all its messages (the privacy delete)."""
        if not await self.engine.delete(Kind.CONVERSATION, scope, validate_sid(sid)):
            raise NotFound("conversation", sid)

    async def clear(self, scope: Scope, sid: str) -> Conversation:
        """Move the clear boundary to the last message: earlier turns stay stored (archived) but
        ``history`` no longer returns them."""
        conv = await self.get(scope, sid)
        last = await self._last_seq(scope, sid)
        return await self._update(scope, sid, {"clear_seq": max(last, conv.clear_seq)})

    async def set_model(self, scope: Scope, sid: str, model: str) -> Conversation:
        """The model this conversation uses from now on ("" goes back to the configured one)."""
        if not isinstance(model, str) or len(model) > 200 or not model.isprintable():
            raise InvalidInput("invalid model name")
        return await self._update(scope, sid, {"model": model.strip()})

    async def set_summary_boundary(self, scope: Scope, sid: str, summary_seq: int) -> Conversation:
        """Record that the summary message at ``summary_seq`` stands for every earlier message."""
        return await self._update(scope, sid, {"summary_seq": int(summary_seq)})

    async def set_tail_digest(self, scope: Scope, sid: str, digest: str) -> Conversation:
        """The conversation's ``tail_digest`` (the OpenAI endpoint's history match)."""
        if not isinstance(digest, str) or len(digest) > MAX_TAIL_DIGEST_CHARS or not digest.isalnum():
            raise InvalidInput("invalid tail digest")
        return await self._update(scope, sid, {"tail_digest": digest})

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

    async def _update(self, scope: Scope, sid: str, fields: dict[str, object]) -> Conversation:
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
