"""The start of a turn in one store call: take the conversation's turn lease, store the user message
and read what the turn needs (the conversation, its newest messages, the memories to recall).

A turn used to make seven calls for this (lease, message, conversation, messages, two memory reads,
and the conversation again to resolve it); on the embedded engine each call is a hop to the worker
thread and the lease and the message were two commits. :meth:`Turns.open` (``store.turns.open``) sends them as
one :meth:`~store.engine.Engine.batch`: one transaction, one durable commit, one hop; a remote
engine sends the reads at once. The user message is durable before ``turns.open`` yields, unless the
caller asks for the opening ``early`` (the agent's turns do): then it is yielded when the batch ran
and :meth:`TurnOpening.wait_durable` waits for the commit.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from store.api.base import Rules, check_limit, check_title, store_fields
from store.api.leases import HeldLease, Leases
from store.api.memories import recall_steps
from store.engine import (
    ClaimStep,
    CreateStep,
    Durable,
    Engine,
    GetStep,
    ListQuery,
    ListStep,
    MarkCutStep,
    Page,
    Step,
    UpdateStep,
)
from store.errors import NotFound
from store.leases import Claimed
from store.models import Conversation, Kind, Memory, Message, Record, Role, Scope, UsageEntry, validate_sid


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
    """What :meth:`Turns.open` read, with the turn lease held and the user message stored."""

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
    #: a title the conversation gets when the turn closes, in that same call (a new conversation's
    #: auto-title: no write of its own on the way to the first token); "" for none
    title: str = ""
    #: the turn's lease while the block runs (see :meth:`Turns.finish`)
    lease: HeldLease | None = field(default=None, repr=False)
    #: opened with ``early``: settled once what the opening wrote is durable (None: it is)
    durable: Durable = field(default=None, repr=False)

    async def wait_durable(self) -> None:
        """Wait until what the opening wrote (the lease, the user message, cut-turn marks) is durable;
        at once when it is. Raises StoreUnavailable when its commit failed: then none of it exists."""
        if self.durable is not None:
            await self.durable
            self.durable = None


class Turns:
    """The start and the end of a turn, each one engine batch under the conversation's turn lease."""

    def __init__(self, engine: Engine, rules: Rules, leases: Leases) -> None:
        self.engine = engine
        self.rules = rules
        self.leases = leases
        #: the openings of this process's open turns, by (context, user, conversation): a rename
        #: cancels the auto-title one of them would write when it closes (:meth:`renaming`)
        self._open: dict[tuple[str, str, str], TurnOpening] = {}

    @asynccontextmanager
    async def open(
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
        mark_cut: bool = True,
        early: bool = False,
    ) -> AsyncIterator[TurnOpening]:
        """Take the turn lease of the conversation (waiting like :meth:`Leases.conversation_lock`), mark the
        turn a crash may have cut there (:mod:`store.cut_turns`), append the user message and read
        ``reads``, all in one engine batch; yields the :class:`TurnOpening` and releases the lease on
        exit, writing the opening's ``usage`` (and ``title``) in the same call. NotFound when the
        conversation is missing (nothing is stored). ``attachments`` is the message's descriptor of the
        attachments stored just before it (see ``store.api.attachments``). ``turn_id`` is stored with
        the message.

        ``rerun_of``: the turn answers this stored user message again (a retry, regenerate: see
        ``agent/rerun.py``) and stores no new one; ``text`` is then unused. NotFound when it is not a
        user message of this conversation.

        ``mark_cut=False``: the turn continues one that handed tool calls to the client (the OpenAI
        endpoint's client tools) and stores their results itself, so its awaited calls are not marked.

        ``early=True``: the opening is yielded as soon as the engine ran the batch, possibly before its
        commit is durable (``Engine.batch_early``: the embedded engine's fsync runs while the turn
        builds its request); the caller acknowledges nothing the opening wrote (the user message's
        sid above all) before :meth:`TurnOpening.wait_durable`."""
        validate_sid(conversation_id)
        message = Message(
            conversation_id=conversation_id,
            role="user",
            content=text,
            channel=channel,
            sender=sender,
            attachments=attachments,
            turn_id=turn_id,
        )
        fields = self.rules.message_fields(message)
        window_query = ListQuery(
            filters={"conversation_id": conversation_id, "seq__gt": max(0, int(reads.window_after_seq))},
            order_by="seq",
            descending=True,
            limit=check_limit(reads.window_limit),
        )
        # always keyed: a repeated batch must see its own user message as its own, not as a cut turn
        request_key = request_key or f"turn:{uuid.uuid4().hex}"
        # a re-run stores no user message: it reads the stored one, and a cut turn there is the one
        # being answered again (not marked)
        mark = MarkCutStep(conversation_id, None if rerun_of else request_key)
        user_step: GetStep | CreateStep = (
            GetStep(Kind.MESSAGE, validate_sid(rerun_of))
            if rerun_of
            else CreateStep(Kind.MESSAGE, fields, request_key)
        )
        get_conv = GetStep(Kind.CONVERSATION, conversation_id)
        list_window = ListStep(Kind.MESSAGE, window_query)
        list_matching, list_recent = recall_steps(
            reads.recall_text, reads.recall_limit, reads.recent_memories
        )
        steps: list[Step] = [mark] if mark_cut else []
        steps += [user_step, get_conv, list_window]
        steps += [s for s in (list_matching, list_recent) if s is not None]

        async def take(claim: ClaimStep) -> tuple[Claimed, TurnOpening]:
            durable: Durable = None
            if early:
                results, durable = await self.engine.batch_early(scope, [claim, *steps])
            else:
                results = await self.engine.batch(scope, [claim, *steps])
            if mark_cut:
                self.leases.stats.marked(results.of(mark))
            user_rec = results.of(user_step)
            if user_rec is None or not _user_message_of(user_rec, conversation_id):
                raise NotFound("message", rerun_of or "")
            conv_rec = results.of(get_conv)
            if conv_rec is None:
                # deleted between the message's create and the read: only a non-atomic engine gets here
                raise NotFound("conversation", conversation_id)
            opening = _opening(
                reads.window_limit,
                created=user_rec,
                conv_rec=conv_rec,
                window_page=results.of(list_window),
                matching=results.of(list_matching) if list_matching is not None else None,
                recent=results.of(list_recent) if list_recent is not None else None,
            )
            opening.durable = durable
            return results.of(claim), opening

        def closing(opening: TurnOpening) -> list[Step]:
            return self._closing_steps(opening)

        async with self.leases.turn_lease(
            scope, conversation_id, take, ttl_s=ttl_s, wait_s=wait_s, closing=closing
        ) as (opening, held):
            opening.lease = held
            key = (scope.context, scope.user_id, conversation_id)
            self._open[key] = opening  # turns of one conversation never overlap (the lease)
            try:
                yield opening
            finally:
                if self._open.get(key) is opening:
                    del self._open[key]

    async def finish(self, opening: TurnOpening, message: Message) -> Message:
        """Store the turn's final message, its ``usage`` entries and the release of its lease in ONE
        batch: on an engine with atomic batches one transaction, one durable commit where a turn used
        to make two (the message, then the usage and the release). Call it last, inside
        :meth:`open`'s block; the block's exit then writes nothing more. Raises like
        :meth:`Messages.append` (the exit still releases the lease). The batch also writes the
        opening's ``title`` (see :meth:`title_on_close`)."""
        if opening.lease is None:
            raise RuntimeError("turns.finish needs the opening of a turn that is still open")
        create = CreateStep(Kind.MESSAGE, self.rules.message_fields(message))
        results = await opening.lease.release_with(self.engine, [create, *self._closing_steps(opening)])
        return Message.from_record(results.of(create))

    def _closing_steps(self, opening: TurnOpening) -> list[Step]:
        """What the turn's last batch writes besides its final message: the usage entries and the
        conversation's new ``title``."""
        steps: list[Step] = [CreateStep(Kind.USAGE, store_fields(e.to_record())) for e in opening.usage]
        if opening.title:
            steps.append(UpdateStep(Kind.CONVERSATION, opening.conversation.sid, {"title": opening.title}))
        return steps

    def title_on_close(self, opening: TurnOpening, title: str) -> None:
        """Give the conversation ``title`` when the turn closes, in its last batch (checked now:
        InvalidInput like :meth:`Conversations.rename`, and nothing is queued). A rename of the
        conversation in this process before then cancels it (:meth:`renaming`)."""
        opening.title = check_title(title)

    def renaming(self, scope: Scope, conversation_id: str) -> None:
        """The conversation is being given a title: a turn of it open in this process no longer
        writes its auto-title when it closes (the user's title stays). Called before the rename's
        write, so a turn closing meanwhile cannot write its title after the user's."""
        opening = self._open.get((scope.context, scope.user_id, conversation_id))
        if opening is not None:
            opening.title = ""


def _opening(
    window_limit: int,
    *,
    created: Record,
    conv_rec: Record,
    window_page: Page[Record],
    matching: Page[Record] | None,
    recent: Page[Record] | None,
) -> TurnOpening:
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


def _user_message_of(rec: Record, conversation_id: str) -> bool:
    return rec.get("conversation_id") == conversation_id and rec.get("role") == Role.USER.value


def _memories(page: Page[Record] | None) -> list[Memory]:
    return [Memory.from_record(r) for r in page.items] if page is not None else []
