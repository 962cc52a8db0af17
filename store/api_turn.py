"""The start of a turn in one store call: take the conversation's turn lease, store the user message
and read what the turn needs (the conversation, its newest messages, the memories to recall).

A turn used to make seven calls for this (lease, message, conversation, messages, two memory reads,
and the conversation again to resolve it); on the embedded engine each call is a hop to the worker
thread and the lease and the message were two commits. :meth:`TurnMixin.open_turn` sends them as
one :meth:`~store.engine.Engine.batch`: one transaction, one durable commit, one hop; a remote
engine sends the reads at once. The user message is durable before ``open_turn`` yields, as before.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from store.api_base import check_limit, store_fields
from store.api_leases import LeaseMixin
from store.api_state import StateMixin
from store.engine import ClaimStep, CreateStep, GetStep, ListQuery, ListStep, MarkCutStep, Page, Step
from store.errors import NotFound
from store.models import Conversation, Kind, Memory, Message, Role, Scope, UsageEntry, validate_sid


@dataclass(frozen=True, slots=True)
class TurnReads:
    """What a turn reads in the same call that stores its user message."""

    #: at most this many of the newest messages of the conversation's window
    window_limit: int = 50
    #: only messages after this seq (the caller holds the window up to there); 0: the whole window
    window_after_seq: int = 0
    #: memories matching the words of this text, at most ``recall_limit`` (0: none)
    recall_text: str = ""
    recall_limit: int = 0
    #: and the newest ``recent_memories`` memories
    recent_memories: int = 0


@dataclass(slots=True)
class TurnOpening:
    """What :meth:`TurnMixin.open_turn` read, with the turn lease held and the user message stored."""

    #: the conversation as it is after the user message was added
    conversation: Conversation
    #: the stored user message (the earlier one when its request key was already used)
    message: Message
    #: oldest first: the newest ``window_limit`` messages with seq above both ``window_after_seq`` and
    #: the conversation's window floor; the user message is the last one
    window: list[Message]
    #: the read hit ``window_limit``: messages between ``window_after_seq`` and the first one of
    #: ``window`` may be missing
    window_full: bool
    matching_memories: list[Memory] = field(default_factory=list)
    recent_memories: list[Memory] = field(default_factory=list)
    #: usage entries the turn adds while it runs: written when the turn closes, in the same call that
    #: releases the lease (a failure to write them is logged, never raised)
    usage: list[UsageEntry] = field(default_factory=list)


class TurnMixin(LeaseMixin, StateMixin):
    @asynccontextmanager
    async def open_turn(
        self,
        scope: Scope,
        conversation_id: str,
        text: str,
        *,
        channel: str,
        sender: str = "",
        request_key: str | None = None,
        attachments: str = "",
        reads: TurnReads = TurnReads(),
        ttl_s: float = 600.0,
        wait_s: float = 600.0,
        turn_id: str = "",
        rerun_of: str | None = None,
    ) -> AsyncIterator[TurnOpening]:
        """Take the turn lease of the conversation (waiting like :meth:`conversation_lock`), mark the
        turn a crash may have cut there (:mod:`store.cut_turns`), append the user message and read
        ``reads``, all in one engine batch; yields the :class:`TurnOpening` and releases the lease on
        exit, writing the opening's ``usage`` in the same call. NotFound when the conversation is
        missing (nothing is stored). ``attachments`` is the message's descriptor of the attachments
        stored just before it (see ``store.api_attachments``). ``turn_id`` is stored with the message.

        ``rerun_of``: the turn answers this stored user message again (a retry, regenerate: see
        ``agent/rerun.py``) and stores no new one; ``text`` is then unused. NotFound when it is not a
        user message of this conversation."""
        validate_sid(conversation_id)
        fields = self._message_fields(
            conversation_id,
            "user",
            text,
            channel=channel,
            sender=sender,
            attachments=attachments,
            turn_id=turn_id,
        )
        window_query = ListQuery(
            filters={"conversation_id": conversation_id, "seq__gt": max(0, int(reads.window_after_seq))},
            order_by="seq",
            descending=True,
            limit=check_limit(reads.window_limit),
        )
        recall = reads.recall_limit > 0 and bool(reads.recall_text.strip())
        # always keyed: a repeated batch must see its own user message as its own, not as a cut turn
        request_key = request_key or f"turn:{uuid.uuid4().hex}"
        steps: list[Step] = [
            MarkCutStep(conversation_id, None if rerun_of else request_key),
            GetStep(Kind.MESSAGE, validate_sid(rerun_of))
            if rerun_of
            else CreateStep(Kind.MESSAGE, fields, request_key),
            GetStep(Kind.CONVERSATION, conversation_id),
            ListStep(Kind.MESSAGE, window_query),
        ]
        if recall:
            query = ListQuery(text=reads.recall_text, limit=check_limit(reads.recall_limit))
            steps.append(ListStep(Kind.MEMORY, query))
        if reads.recent_memories > 0:
            query = ListQuery(
                order_by="created_at", descending=True, limit=check_limit(reads.recent_memories)
            )
            steps.append(ListStep(Kind.MEMORY, query))

        async def take(claim: ClaimStep) -> tuple[object, TurnOpening]:
            outcome, marks, created, conv, window, *memories = await self.engine.batch(scope, [claim, *steps])
            self.lease_stats.marked(marks)
            if rerun_of and not _user_message_of(created, conversation_id):
                raise NotFound("message", rerun_of)
            matching = memories.pop(0) if recall else None
            recent = memories.pop(0) if reads.recent_memories > 0 else None
            return outcome, _opening(
                conversation_id,
                reads.window_limit,
                created=created,
                conv_rec=conv,
                window_page=window,
                matching=matching,
                recent=recent,
            )

        def closing(opening: TurnOpening) -> list[Step]:
            return [CreateStep(Kind.USAGE, store_fields(e.to_record())) for e in opening.usage]

        async with self._turn_lease(
            scope, conversation_id, take, ttl_s=ttl_s, wait_s=wait_s, closing=closing
        ) as opening:
            yield opening


def _opening(
    conversation_id: str,
    window_limit: int,
    *,
    created: object,
    conv_rec: object,
    window_page: object,
    matching: object,
    recent: object,
) -> TurnOpening:
    if conv_rec is None:
        # deleted between the message's create and the read: only a non-atomic engine can get here
        raise NotFound("conversation", conversation_id)
    assert isinstance(created, dict) and isinstance(conv_rec, dict) and isinstance(window_page, Page)
    conv = Conversation.from_record(conv_rec)
    floor = conv.window_floor
    return TurnOpening(
        conversation=conv,
        message=Message.from_record(created),
        window=[Message.from_record(r) for r in reversed(window_page.items) if int(r["seq"]) > floor],
        window_full=len(window_page.items) >= window_limit,
        matching_memories=_memories(matching),
        recent_memories=_memories(recent),
    )


def _user_message_of(rec: object, conversation_id: str) -> bool:
    return (
        isinstance(rec, dict)
        and rec.get("conversation_id") == conversation_id
        and rec.get("role") == Role.USER.value
    )


def _memories(page: object) -> list[Memory]:
    return [Memory.from_record(r) for r in page.items] if isinstance(page, Page) else []
