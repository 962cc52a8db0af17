"""Small helpers shared by the store tests."""

from __future__ import annotations

from store.api.store import Store, now_ms
from store.engine import Page
from store.models import Conversation, Message, Scope
from tests.waiting import until


async def next_ms() -> None:
    """Wait until the millisecond clock has moved on (store timestamps have 1 ms resolution)."""
    start = now_ms()
    await until(lambda: now_ms() > start, timeout=5, interval=0.001, what="the millisecond clock to move on")


async def conversation_with(store: Store, scope: Scope, n: int, title: str = "chat") -> Conversation:
    conv = await store.conversations.create(scope, title, channel="cli")
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        await store.messages.append(
            scope,
            Message(conversation_id=conv.sid, role=role, content=f"{title} message {i + 1}", channel="cli"),
        )
    return await store.conversations.get(scope, conv.sid)


def sids(page: Page[Conversation]) -> list[str]:
    return [item.sid for item in page.items]


def keeps_unknown_fields(store: Store) -> bool:
    """False for the osis engine in core mode: a generated server drops fields its schema does not
    declare (docs/osis.md, "Core mode")."""
    return getattr(store.engine, "mode", "full") != "core"
