"""Property tests (hypothesis) of the store over every engine: ordering, paging, clear boundaries and
scope isolation hold for arbitrary operation sequences, checked against a plain in-memory model.

Each example opens a fresh engine in a fresh directory (``anyio.run`` per example, since hypothesis
replays examples many times inside one test)."""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.api.store import Store
from store.errors import NotFound
from store.models import AuditEntry, Message, Scope
from tests.store.conftest import ALICE, ALICE_ELSEWHERE, BOB
from tests.store.engines import ENGINES

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCOPES = [ALICE, BOB, ALICE_ELSEWHERE]


def run_on(engine_name: str, scenario: Callable[[Store], Awaitable[None]]) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with ENGINES[engine_name](Path(tmp)) as engine:
                await scenario(Store(engine))

    anyio.run(main)


engines = pytest.mark.parametrize("engine_name", sorted(ENGINES))

ops_strategy = st.lists(
    st.tuples(st.sampled_from(["append", "append", "append", "clear"]), st.integers(0, 1)), max_size=40
)


@engines
@SETTINGS
@given(ops=ops_strategy, window=st.integers(1, 8))
def test_order_and_clear_boundaries(engine_name: str, ops: list[tuple[str, int]], window: int) -> None:
    async def scenario(store: Store) -> None:
        convs = [await store.conversations.create(ALICE, f"c{i}") for i in range(2)]
        model: list[list[str]] = [[], []]
        cleared = [0, 0]
        for n, (op, idx) in enumerate(ops):
            if op == "append":
                msg = await store.messages.append(
                    ALICE,
                    Message(conversation_id=convs[idx].sid, role="user", content=f"m{n}", channel="cli"),
                )
                model[idx].append(msg.content)
                assert msg.seq == len(model[idx])
            else:
                await store.conversations.clear(ALICE, convs[idx].sid)
                cleared[idx] = len(model[idx])
        for idx, conv in enumerate(convs):
            history = await store.messages.history(ALICE, conv.sid, limit=window)
            assert [m.content for m in history] == model[idx][cleared[idx] :][-window:]
            everything = await store.messages.list(ALICE, conv.sid, limit=1000)
            assert [m.content for m in everything.items] == model[idx]
            assert [m.seq for m in everything.items] == list(range(1, len(model[idx]) + 1))
            assert (await store.conversations.get(ALICE, conv.sid)).message_count == len(model[idx])

    run_on(engine_name, scenario)


@engines
@SETTINGS
@given(
    n=st.integers(0, 25),
    page_size=st.integers(1, 7),
    tools=st.lists(st.sampled_from("abc"), min_size=25, max_size=25),
)
def test_paging_has_no_dupes_or_gaps(engine_name: str, n: int, page_size: int, tools: list[str]) -> None:
    async def scenario(store: Store) -> None:
        for i in range(n):
            await store.records.append_audit(ALICE, AuditEntry(tool=tools[i], duration_ms=float(i)))
        whole = [e.sid for e in (await store.records.list_audit(ALICE, limit=1000)).items]
        assert len(whole) == len(set(whole)) == n
        paged: list[str] = []
        cursor = None
        while True:
            page = await store.records.list_audit(ALICE, limit=page_size, cursor=cursor)
            assert len(page.items) <= page_size
            paged += [e.sid for e in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert paged == whole

    run_on(engine_name, scenario)


scope_ops = st.lists(
    st.tuples(
        st.sampled_from(["conversation", "memory", "append", "peek"]), st.integers(0, 2), st.integers(0, 2)
    ),
    max_size=25,
)


@engines
@SETTINGS
@given(ops=scope_ops)
def test_scopes_never_see_each_other(engine_name: str, ops: list[tuple[str, int, int]]) -> None:
    async def scenario(store: Store) -> None:
        convs: dict[Scope, list[str]] = {s: [] for s in SCOPES}
        memories: dict[Scope, set[str]] = {s: set() for s in SCOPES}
        for n, (op, who, other) in enumerate(ops):
            scope, intruder = SCOPES[who], SCOPES[other]
            if op == "conversation":
                convs[scope].append((await store.conversations.create(scope, f"t{n}")).sid)
            elif op == "memory":
                mem, _ = await store.memories.add(scope, f"fact {n} shared words")
                memories[scope].add(mem.sid)
            elif op == "append" and convs[scope]:
                await store.messages.append(
                    scope,
                    Message(conversation_id=convs[scope][-1], role="user", content=f"m{n}", channel="cli"),
                )
            elif op == "peek" and convs[scope] and intruder != scope:
                target = convs[scope][-1]
                if (
                    target not in convs[intruder]
                ):  # sids are per context: the same sid may be the intruder's own
                    with pytest.raises(NotFound):
                        await store.conversations.get(intruder, target)
        for scope in SCOPES:
            listed = (await store.conversations.list(scope, limit=1000)).items
            assert sorted(c.sid for c in listed) == sorted(convs[scope])
            assert all((c.context, c.user_id) == (scope.context, scope.user_id) for c in listed)
            found = await store.memories.search(scope, "shared words", limit=1000)
            assert {m.sid for m in found} == memories[scope]
            assert (await store.records.stats(scope)).memories == len(memories[scope])

    run_on(engine_name, scenario)
