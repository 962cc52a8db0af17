"""The Agent's conversation operations (``agent.conversations``): the active conversation per
(context, user), new, /clear and /compact (both wait for a running turn of the conversation: they take
its turn lock).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from agent.memory import MemoryManager
from agent.prompt.compaction import Compactor
from agent.prompt.window import WindowCache
from config.settings import AgentSettings
from store import SID_RE, Conversation, InvalidInput, NotFound, Scope, Store

#: the per-scope state key holding the active conversation's id
ACTIVE_KEY = "active_conversation"


class Conversations:
    """A user's conversations as the Agent manages them: which one is active, making, clearing and
    compacting one. Part of :class:`~agent.core.Agent`, built from the Agent's parts it works with."""

    def __init__(
        self,
        store: Store,
        memory: MemoryManager,
        compactor: Compactor,
        window: WindowCache,
        settings: AgentSettings,
    ) -> None:
        self.store = store
        self.memory = memory
        self.compactor = compactor
        self.window = window
        self.settings = settings
        self._create_locks: dict[tuple[str, str], anyio.Lock] = {}

    async def active(
        self, scope: Scope, *, channel: str, create: bool = True, is_group: bool = False
    ) -> Conversation | None:
        """The user's active conversation in this context; a new one when there is none (and ``create``)."""
        async with self._create_lock(scope):
            sid = await self.store.state.get(scope, ACTIVE_KEY)
            if sid:
                try:
                    return await self.store.conversations.get(scope, sid)
                except (NotFound, InvalidInput):
                    pass  # deleted meanwhile
            if not create:
                return None
            return await self.new(scope, channel=channel, is_group=is_group)

    async def active_id(self, scope: Scope, *, channel: str, is_group: bool = False) -> str:
        """The active conversation's id for a turn, from the state alone (a new conversation when there
        is none): the turn's opening batch reads the conversation itself, once, and answers NotFound
        when it was deleted since it was made active (then :meth:`replace_active`)."""
        async with self._create_lock(scope):
            sid = await self.store.state.get(scope, ACTIVE_KEY)
            if sid and SID_RE.match(sid):
                return sid
            return (await self.new(scope, channel=channel, is_group=is_group)).sid

    async def stored_active_id(self, scope: Scope) -> str | None:
        """The active conversation's id as the state holds it (None when there is none); makes nothing."""
        return await self.store.state.get(scope, ACTIVE_KEY)

    async def replace_active(self, scope: Scope, stale: str, *, channel: str, is_group: bool = False) -> str:
        """A new active conversation in place of ``stale``, which the store no longer has; a turn that
        raced this one may have replaced it already (then that one is the active one)."""
        async with self._create_lock(scope):
            sid = await self.store.state.get(scope, ACTIVE_KEY)
            if sid and sid != stale and SID_RE.match(sid):
                return sid
            return (await self.new(scope, channel=channel, is_group=is_group)).sid

    def _create_lock(self, scope: Scope) -> anyio.Lock:
        """Per (context, user): two first messages at once must not make two conversations."""
        return self._create_locks.setdefault((scope.context, scope.user_id), anyio.Lock())

    async def set_active(self, scope: Scope, conversation_id: str) -> None:
        """Make ``conversation_id`` the active one; NotFound for a missing or foreign id."""
        conv = await self.store.conversations.get(scope, conversation_id)
        await self.store.state.set(scope, ACTIVE_KEY, conv.sid)

    async def new(
        self, scope: Scope, *, channel: str, title: str = "", is_group: bool = False
    ) -> Conversation:
        """Create a conversation and make it the active one."""
        conv = await self.store.conversations.create(scope, title, channel=channel, is_group=is_group)
        self.window.created(scope, conv)
        await self.store.state.set(scope, ACTIVE_KEY, conv.sid)
        return conv

    async def clear(self, scope: Scope, conversation_id: str) -> Conversation:
        """Save what is worth keeping (memory flush), then hide the earlier turns from the model.
        Waits for a running turn of the conversation to finish first."""
        conv = await self.store.conversations.get(scope, conversation_id)
        await self.memory.flush(scope, conv.sid, conv.last_channel)
        async with self._turn_lock(scope, conv.sid):
            return await self.store.conversations.clear(scope, conv.sid)

    async def compact(self, scope: Scope, conversation_id: str, *, channel: str) -> bool:
        """``/compact``: summarise all but the newest turn now; False when there is too little."""
        conv = await self.store.conversations.get(scope, conversation_id)
        async with self._turn_lock(scope, conv.sid):
            return await self.compactor.compact(scope, conv.sid, channel)

    async def forget(self, scope: Scope, conversation_id: str) -> None:
        """What is left after the store deleted a conversation: its window is dropped from the cache, and
        it is no longer the active one (a deleted active conversation leaves no active one)."""
        self.window.forget(scope, conversation_id)
        if await self.store.state.get(scope, ACTIVE_KEY) == conversation_id:
            await self.store.state.delete(scope, ACTIVE_KEY)

    @asynccontextmanager
    async def _turn_lock(self, scope: Scope, conversation_id: str) -> AsyncIterator[None]:
        """The conversation's turn lock, held as a turn holds it (a running turn is waited for), with
        the window cache of the conversation forgotten: what runs under it rewrites the history."""
        async with self.store.leases.conversation_lock(
            scope, conversation_id, ttl_s=self.settings.turn_lock_ttl_s, wait_s=self.settings.turn_deadline_s
        ):
            self.window.forget(scope, conversation_id)
            yield
