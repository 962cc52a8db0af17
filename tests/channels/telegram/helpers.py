"""Small helpers shared by the Telegram tests (reading what the store holds for a scope)."""

from __future__ import annotations

from store import Message, Scope, Store


async def stored_messages(store: Store, scope: Scope) -> list[Message]:
    """Every message of every conversation of ``scope``, conversations oldest first."""
    out: list[Message] = []
    convs = await store.conversations.list(scope, limit=100, archived=None)
    for conv in reversed(convs.items):
        page = await store.messages.list(scope, conv.sid, limit=500)
        out.extend(page.items)
    return out
