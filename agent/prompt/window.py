"""A per-process cache of each conversation's history window, so a turn reads only what is new.

Reading the whole window (``agent.history_limit`` messages) on every turn costs the same store read
and record decoding each time; with the cache, a turn asks the store only for the messages after the
newest one it holds (in the same store call that opens the turn: :meth:`WindowCache.plan`,
:meth:`WindowCache.absorb`) and joins them to what it holds. The store stays the source of truth,
also for other processes:

* the new messages are read together with the conversation, whose window floor (clear boundary,
  summary) must be the one the cached window was cut at: a ``/clear`` or a compaction elsewhere moves
  it, and the window is read whole again;
* the new messages must start right after the cached ones (a message's ``seq`` is gap-free): a read
  that hit its limit has skipped some, and the window is read whole again;
* a compaction summary among the new messages moves the window's start: read whole again;
* this process's own ``/clear``, compaction and delete drop the entry.

With the window the entry keeps what the turn derived from it, the model's view
(:mod:`agent.prompt.incremental`): the next turn extends it by the new messages
(:meth:`WindowCache.history`). A window read whole starts a new view.

Messages are never removed one by one (only whole conversations are deleted) and the only edit is a
re-run's ``superseded_by`` mark (``agent/rerun.py``): a re-run turn drops the entry before it opens
and marks the messages it holds. Another process's cached copy of a message marked there stays
unmarked until that process reads the window whole again (a known limit when several daemons
share one store; the marks in the store are what export and the page show).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

from agent.prompt.history import SUMMARY_TYPE, History, to_chat
from agent.prompt.incremental import HISTORY_STATS, Derived, derive
from agent.providers.base import ChatMessage
from store import Conversation, Message, Scope, Store, TurnOpening

#: how many new messages a turn reads to catch up (a turn with many tool rounds adds more and
#: simply falls back to a whole read)
CATCH_UP = 32
MAX_CONVERSATIONS = 256

_Key = tuple[str, str, str]
_UNSEEN: ChatMessage | None = ChatMessage(role="unseen")  # a marker: None is a valid answer


@dataclass(slots=True)
class _Entry:
    floor: int
    messages: list[Message]
    #: the model's view of each message, converted once: (sid, group) -> ChatMessage (None: not shown)
    chats: dict[tuple[str, bool], ChatMessage | None] = field(default_factory=dict)
    #: the model's view last derived from this window (None: derive it whole)
    derived: Derived | None = None
    #: the conversation as read with the window (None: not known), for a turn's early request
    conversation: Conversation | None = None


@dataclass(frozen=True, slots=True)
class Known:
    """What the cache knows of a conversation no other turn of this process is in: enough to build a
    turn's request before its opening answered (``agent/turn/early.py``)."""

    conversation: Conversation
    #: the window the turn's opening will read, less the turn's own message (oldest first; a new
    #: conversation's: empty)
    messages: list[Message]


class WindowCache:
    """The newest ``limit`` messages after the clear/summary boundary, per conversation (LRU)."""

    def __init__(self, store: Store, limit: int) -> None:
        self.store = store
        self.limit = limit
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        #: the turns of this process in each conversation, from before their opening to their end
        self._turns: Counter[_Key] = Counter()

    def plan(self, scope: Scope, conversation_id: str) -> tuple[int, int]:
        """``(after_seq, limit)`` for the read that opens a turn: only what follows the cached window,
        or the whole window when nothing usable is cached."""
        entry = self._entries.get(_key(scope, conversation_id))
        if entry and entry.messages and self.limit > CATCH_UP:
            return entry.messages[-1].seq, CATCH_UP
        return 0, self.limit

    async def absorb(
        self, scope: Scope, conversation_id: str, after_seq: int, opening: TurnOpening
    ) -> list[Message]:
        """The window, oldest first, from the turn's opening read (planned by :meth:`plan`, which
        answered ``after_seq``); reads the whole window again when that read cannot be joined to the
        cached window."""
        key = _key(scope, conversation_id)
        floor = opening.conversation.window_floor
        new = opening.window
        entry = self._entries.get(key)
        if after_seq == 0:  # it was a whole read
            self.misses += 1
            # a turn's early request derived its view from this very window (its user message
            # adopted as the stored one): that view stays
            carry = (
                entry is not None
                and entry.floor == floor
                and entry.derived is not None
                and any(m is entry.derived.last for m in new)
            )
            return self._keep(key, floor, new, carry=carry, conversation=opening.conversation)
        if (
            entry is not None
            and entry.messages
            and entry.floor == floor
            # a message's seq is gap-free in its conversation: nothing was skipped between the two
            and entry.messages[-1].seq >= after_seq
            and (not new or new[0].seq == after_seq + 1)
            and not any(m.message_type == SUMMARY_TYPE for m in new)
        ):
            self.hits += 1
            last = entry.messages[-1].seq
            joined = entry.messages + [m for m in new if m.seq > last]
            return self._keep(key, floor, joined, carry=True, conversation=opening.conversation)
        return await self.window(scope, conversation_id)

    async def window(self, scope: Scope, conversation_id: str) -> list[Message]:
        """The whole window read again, oldest first (``store.messages.history(limit=self.limit)``)."""
        self.misses += 1
        conv = await self.store.conversations.get(scope, conversation_id)
        messages = await self.store.messages.history(scope, conversation_id, limit=self.limit)
        return self._keep(_key(scope, conversation_id), conv.window_floor, messages, conversation=conv)

    def history(self, scope: Scope, conversation_id: str, stored: list[Message], *, group: bool) -> History:
        """The model's view of ``stored`` (the window this cache answered), exactly
        :func:`~agent.prompt.history.history_from`'s: extended from the view derived at the
        conversation's last turn when the window only grew and slid, else derived whole; kept for
        the next turn."""
        entry = self._entries.get(_key(scope, conversation_id))
        convert = self.converter(scope, conversation_id)
        history, derived, path = derive(
            stored, group=group, convert=convert, kept=entry.derived if entry is not None else None
        )
        HISTORY_STATS.builds[path] += 1
        if entry is not None:
            entry.derived = derived
        return history

    def converter(self, scope: Scope, conversation_id: str) -> Callable[[Message, bool], ChatMessage | None]:
        """:func:`~agent.prompt.history.to_chat` remembering its answers for the conversation's window."""
        entry = self._entries.get(_key(scope, conversation_id))
        memo = entry.chats if entry is not None else {}

        def convert(msg: Message, group: bool) -> ChatMessage | None:
            key = (msg.sid, group)
            chat = memo.get(key, _UNSEEN)
            if chat is _UNSEEN:
                chat = memo[key] = to_chat(msg, group=group)
            return chat

        return convert

    def forget(self, scope: Scope, conversation_id: str) -> None:
        self._entries.pop(_key(scope, conversation_id), None)

    def appended(self, scope: Scope, conversation_id: str, message: Message) -> None:
        """This process stored ``message`` in the conversation (a turn's step, tool result or answer):
        the cached window takes it when it follows the newest cached message (else the next turn's
        read brings it, with what came between)."""
        key = _key(scope, conversation_id)
        entry = self._entries.get(key)
        if entry is None or not entry.messages or message.seq != entry.messages[-1].seq + 1:
            return
        self._keep(key, entry.floor, [*entry.messages, message], carry=True, conversation=entry.conversation)

    def created(self, scope: Scope, conversation: Conversation) -> None:
        """This process made ``conversation`` just now: its window is known, and empty."""
        key = _key(scope, conversation.sid)
        if key not in self._entries:
            self._keep(key, conversation.window_floor, [], conversation=conversation)

    @contextmanager
    def turn(self, scope: Scope, conversation_id: str) -> Iterator[bool]:
        """Held by a turn from before its opening to its end; yields whether it is the conversation's
        only turn in this process (only then can :meth:`known` be its window: an earlier turn still
        running will add to it)."""
        key = _key(scope, conversation_id)
        self._turns[key] += 1
        try:
            yield self._turns[key] == 1
        finally:
            self._turns[key] -= 1
            if not self._turns[key]:
                del self._turns[key]

    def known(self, scope: Scope, conversation_id: str) -> Known | None:
        """The cached conversation and window (None when not cached). The store stays the judge: the
        turn's opening reads what is new, and a turn that built on this checks it
        (``EarlyRequest.confirms``) before it adopts its message (:meth:`adopt`)."""
        entry = self._entries.get(_key(scope, conversation_id))
        if entry is None or entry.conversation is None:
            return None
        # the turn's own message takes a place in its window: the oldest cached one leaves it (when
        # the window is full)
        keep = self.limit - 1
        return Known(entry.conversation, entry.messages[-keep:] if keep > 0 else [])

    def adopt(self, scope: Scope, conversation_id: str, guessed: Message, stored: Message) -> Message:
        """A turn built its request on ``guessed``, its user message before it was stored; ``stored``
        is that message as the store wrote it. ``guessed`` takes its fields and stands for it from now
        on (so the view derived from the guess stays usable), and its model view is kept under its
        stored sid. Returns ``guessed``."""
        for f in fields(Message):
            setattr(guessed, f.name, getattr(stored, f.name))
        entry = self._entries.get(_key(scope, conversation_id))
        if entry is not None:
            for group in (False, True):
                chat = entry.chats.pop(("", group), _UNSEEN)
                if chat is not _UNSEEN:
                    entry.chats[(guessed.sid, group)] = chat
        return guessed

    def _keep(
        self,
        key: _Key,
        floor: int,
        messages: list[Message],
        *,
        carry: bool = False,
        conversation: Conversation | None = None,
    ) -> list[Message]:
        """Keeps ``messages`` (the newest ``limit``) as the conversation's window; ``carry``: they
        are the cached window's own objects followed by new ones, so its derived view stays."""
        window = messages[-self.limit :]
        old = self._entries.get(key)
        chats = old.chats if old is not None else {}
        if len(chats) > 2 * len(window) + CATCH_UP:  # now and then, drop what left the window
            inside = {m.sid for m in window}
            chats = {k: v for k, v in chats.items() if k[0] in inside}
        derived = old.derived if carry and old is not None else None
        self._entries[key] = _Entry(floor, window, chats, derived, conversation)
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_CONVERSATIONS:
            self._entries.popitem(last=False)
        return list(window)


def _key(scope: Scope, conversation_id: str) -> _Key:
    return (scope.context, scope.user_id, conversation_id)
