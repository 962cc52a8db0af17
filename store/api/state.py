"""Per-scope key/value state (active conversation, channel offsets and marks): ``store.state``."""

from __future__ import annotations

from store.api.base import store_fields
from store.engine import Engine, ListQuery
from store.models import Kind, Scope, StateEntry


class State:
    """Small string values by key, one per key and scope (an ``AgentState`` record each)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def get(self, scope: Scope, key: str) -> str | None:
        page = await self.engine.list(Kind.STATE, scope, ListQuery(filters={"key": key}, limit=1))
        return StateEntry.from_record(page.items[0]).value if page.items else None

    async def set(self, scope: Scope, key: str, value: str) -> None:
        page = await self.engine.list(Kind.STATE, scope, ListQuery(filters={"key": key}, limit=1))
        if page.items:
            await self.engine.update(Kind.STATE, scope, page.items[0]["sid"], {"value": value})
        else:
            rec = StateEntry(key=key, value=value).to_record()
            await self.engine.create(Kind.STATE, scope, store_fields(rec), request_key=f"state:{key}")
            # a concurrent creator may have won the request key: make our value the current one
            await self.set_existing(scope, key, value)

    async def set_existing(self, scope: Scope, key: str, value: str) -> None:
        page = await self.engine.list(Kind.STATE, scope, ListQuery(filters={"key": key}, limit=1))
        if page.items and page.items[0].get("value") != value:
            await self.engine.update(Kind.STATE, scope, page.items[0]["sid"], {"value": value})

    async def delete(self, scope: Scope, key: str) -> None:
        page = await self.engine.list(Kind.STATE, scope, ListQuery(filters={"key": key}, limit=1))
        for rec in page.items:
            await self.engine.delete(Kind.STATE, scope, rec["sid"])
