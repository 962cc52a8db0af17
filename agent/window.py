"""A per-process cache of each conversation's history window, so a turn reads only what is new.

Reading the whole window (``agent.history_limit`` messages) on every turn costs the same store read
and record decoding each time; with the cache, a turn asks the store for the last few messages only
and joins them to what it holds. The store stays the source of truth, also for other processes:

* the small read must contain the newest cached message (same sid): otherwise more was written than
  it covers, or a ``/clear`` moved the boundary past it, and the window is read whole again;
* a compaction summary among the new messages moves the window's start: read whole again;
* this process's own ``/clear``, compaction and delete drop the entry.

Messages are never edited or removed one by one (only whole conversations are deleted), so a
message once read stays valid.
"""

from __future__ import annotations

from collections import OrderedDict

from agent.context import SUMMARY_TYPE
from store import Message, Scope, Store

#: how many of the newest messages a turn reads to catch up (a turn with many tool rounds adds more
#: and simply falls back to a whole read)
CATCH_UP = 32
MAX_CONVERSATIONS = 256

_Key = tuple[str, str, str]


class WindowCache:
    """The newest ``limit`` messages after the clear/summary boundary, per conversation (LRU)."""

    def __init__(self, store: Store, limit: int) -> None:
        self.store = store
        self.limit = limit
        self._entries: OrderedDict[_Key, list[Message]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def window(self, scope: Scope, conversation_id: str) -> list[Message]:
        """Oldest first, exactly what ``store.history(limit=self.limit)`` would answer."""
        key = (scope.context, scope.user_id, conversation_id)
        cached = self._entries.get(key)
        if cached and self.limit > CATCH_UP:
            recent = await self.store.history(scope, conversation_id, limit=CATCH_UP)
            joined = _join(cached, recent)
            if joined is not None:
                self.hits += 1
                return self._keep(key, joined)
        self.misses += 1
        return self._keep(key, await self.store.history(scope, conversation_id, limit=self.limit))

    def forget(self, scope: Scope, conversation_id: str) -> None:
        self._entries.pop((scope.context, scope.user_id, conversation_id), None)

    def _keep(self, key: _Key, messages: list[Message]) -> list[Message]:
        window = messages[-self.limit :]
        self._entries[key] = window
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_CONVERSATIONS:
            self._entries.popitem(last=False)
        return list(window)


def _join(cached: list[Message], recent: list[Message]) -> list[Message] | None:
    """``cached`` continued by ``recent``; None when ``recent`` does not provably continue it."""
    if not recent:
        return None  # the boundary moved past everything: read whole
    last = cached[-1]
    for i, msg in enumerate(recent):
        if msg.sid == last.sid:
            new = recent[i + 1 :]
            if any(m.message_type == SUMMARY_TYPE for m in new):
                return None
            return cached + new
    return None
