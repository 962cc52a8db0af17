"""The dispatcher without HTTP: paged dumps survive retried pages and lost sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from store.engine import Engine
from store.models import Kind, Scope
from store.osis.dispatch import Dispatcher, RpcError
from store.osis.protocol import INVALID_PARAMS
from store.sqlite.engine import EmbeddedEngine

pytestmark = pytest.mark.anyio
SCOPE = Scope("default", "ann")


async def _fill(engine: Engine, n: int) -> None:
    conv = await engine.create(Kind.CONVERSATION, SCOPE, {"title": "t"})
    for i in range(n):
        await engine.create(
            Kind.MESSAGE, SCOPE, {"conversation_id": conv["sid"], "role": "user", "content": f"{i}"}
        )


def _sids(page: dict[str, Any]) -> list[str]:
    return [f"{i['kind']}:{i['record']['sid']}" for i in page["items"]]


async def test_retried_and_orphaned_dump_pages_give_the_same_records(tmp_path: Path) -> None:
    async with EmbeddedEngine(tmp_path, fsync_commits=False) as engine:
        await _fill(engine, 24)
        expected = [f"{k.value}:{r['sid']}" async for k, r in engine.dump("default")]
        async with Dispatcher(engine) as disp:
            first = await disp.call("store.dump", {"limit": 10}, "default")
            second = await disp.call("store.dump", {"limit": 10, "cursor": first["next_cursor"]}, "default")
            # the answer to the second page was lost: the client asks again with the same cursor
            again = await disp.call("store.dump", {"limit": 10, "cursor": first["next_cursor"]}, "default")
            assert _sids(again) == _sids(second)
            rest = await disp.call("store.dump", {"limit": 10, "cursor": again["next_cursor"]}, "default")
            assert rest["next_cursor"] is None
            assert _sids(first) + _sids(second) + _sids(rest) == expected
        async with Dispatcher(engine) as fresh:  # a restarted server knows no dump sessions
            resumed = await fresh.call("store.dump", {"limit": 10, "cursor": first["next_cursor"]}, "default")
            assert _sids(resumed) == _sids(second)
            with pytest.raises(RpcError) as info:
                await fresh.call("store.dump", {"cursor": "garbage"}, "default")
            assert info.value.code == INVALID_PARAMS and "cursor" in info.value.message


async def test_a_dump_of_another_context_does_not_leak_through_a_cursor(tmp_path: Path) -> None:
    async with EmbeddedEngine(tmp_path, fsync_commits=False) as engine:
        await _fill(engine, 15)
        async with Dispatcher(engine) as disp:
            first = await disp.call("store.dump", {"limit": 5}, "default")
            other = await disp.call("store.dump", {"limit": 5, "cursor": first["next_cursor"]}, "elsewhere")
            assert other == {"items": [], "next_cursor": None}
