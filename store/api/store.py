"""The async store API the agent uses: domain operations on top of one :class:`~store.engine.Engine`.

:class:`Store` is the whole store: it opens and closes the engine and holds one **part** per concept,
each a small object in its own module, built here with the engine and the other parts it uses:

* ``conversations`` (:mod:`store.api.conversations`), ``messages`` (:mod:`store.api.messages`);
* ``memories``, ``records`` (audit, usage, their summaries, scope stats), ``state`` (key/value);
* ``leases`` (expiring leases, turn locks), ``turns`` (a turn's opening and finish, on the leases),
  ``stops`` (``/stop`` across processes, on the leases);
* ``links`` (identity links and pairing codes, on the state), ``attachments``.

A call reads ``store.conversations.get(scope, cid)``; what concerns the whole store (every kind, every
part: ``users_with_data``, ``rename_user``) and the message rules (``check_text``) stay here. Every call
takes a :class:`~store.models.Scope`; ids from another user or context raise
:class:`~store.errors.NotFound` exactly like missing ones. Input is validated here, once, for every
engine. The names of the old mixin stack (``append_message``...) and their new places are listed in
docs/store.md ("API map").
"""

from __future__ import annotations

from store.api.attachments import DEFAULT_MAX_ATTACHMENT_BYTES, Attachments
from store.api.base import MAX_TAGS, MAX_TITLE_CHARS, Rules, memory_hash, now_ms
from store.api.conversations import Conversations
from store.api.fallbacks import with_fallbacks
from store.api.leases import Leases
from store.api.links import Links
from store.api.memories import Memories
from store.api.messages import Messages
from store.api.records import Aggregate, Records, ScopeStats, TimeRange
from store.api.state import State
from store.api.stops import Stops
from store.api.turn import Turns
from store.engine import Engine
from store.errors import Conflict, InvalidInput
from store.leases import LEASE_S
from store.models import SYSTEM_CONTEXT, Kind, Scope, validate_user

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


class Store:
    """Domain operations over an engine, one part per concept. An async context manager that opens and
    closes the engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_message_chars: int = 32_000,
        lease_s: float = LEASE_S,
        max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES,
    ) -> None:
        #: the engine, behind the fallbacks for any capability it lacks (see ``store.api.fallbacks``)
        self.engine = with_fallbacks(engine)
        self.rules = Rules(max_message_chars)
        self.conversations = Conversations(self.engine, renaming=self._renaming)
        self.messages = Messages(self.engine, self.rules, self.conversations)
        self.memories = Memories(self.engine, self.rules)
        self.records = Records(self.engine)
        self.state = State(self.engine)
        self.leases = Leases(self.engine, lease_s=lease_s)
        self.turns = Turns(self.engine, self.rules, self.leases)
        self.stops = Stops(self.engine, self.leases)
        self.links = Links(self.engine, self.state)
        self.attachments = Attachments(self.engine, max_bytes=max_attachment_bytes)

    def _renaming(self, scope: Scope, conversation_id: str) -> None:
        self.turns.renaming(scope, conversation_id)

    async def __aenter__(self) -> Store:
        await self.engine.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.aclose()

    async def aclose(self) -> None:
        await self.engine.aclose()

    @property
    def max_message_chars(self) -> int:
        """The longest message (and memory) the store takes, in characters."""
        return self.rules.max_message_chars

    def check_text(self, content: object, *, what: str = "message") -> str:
        """``content`` checked against the store's rules (:func:`store.models.check_text`)."""
        return self.rules.check_text(content, what=what)

    # -- the whole store -----------------------------------------------------------------------

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
        await self.links.relink(old, new)
        return moved
