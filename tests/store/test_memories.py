"""Conformance: memories (hash dedupe, list, delete, relevance-ranked search), scoped."""

from __future__ import annotations

import pytest

from store.api.store import Store, memory_hash
from store.errors import InvalidInput, NotFound
from tests.store.conftest import ALICE, ALICE_ELSEWHERE, BOB
from tests.store.helpers import next_ms

pytestmark = pytest.mark.anyio


async def test_add_dedupes_by_normalised_content(store: Store) -> None:
    mem, created = await store.add_memory(ALICE, "  Alice likes green tea ", source_channel="cli")
    assert created
    assert mem.content == "Alice likes green tea"
    assert mem.hash == memory_hash("alice LIKES   green tea")
    same, created_again = await store.add_memory(ALICE, "alice likes\tgreen   TEA")
    assert not created_again
    assert same == mem
    assert len((await store.list_memories(ALICE)).items) == 1
    bobs, bob_created = await store.add_memory(BOB, "Alice likes green tea")
    assert bob_created and bobs.user_id == "bob"


async def test_empty_or_oversized_memory_refused(store: Store) -> None:
    with pytest.raises(InvalidInput):
        await store.add_memory(ALICE, "   ")
    with pytest.raises(InvalidInput):
        await store.add_memory(ALICE, "x" * 5000)
    assert (await store.list_memories(ALICE)).items == []


async def test_list_newest_first_with_paging(store: Store) -> None:
    made = []
    for i in range(5):
        made.append((await store.add_memory(ALICE, f"fact number {i}"))[0])
        await next_ms()
    first = await store.list_memories(ALICE, limit=3)
    rest = await store.list_memories(ALICE, limit=3, cursor=first.next_cursor)
    assert [m.sid for m in first.items + rest.items] == [m.sid for m in reversed(made)]
    assert rest.next_cursor is None


async def test_delete_and_re_add(store: Store) -> None:
    mem, _ = await store.add_memory(ALICE, "temporary fact")
    with pytest.raises(NotFound):
        await store.delete_memory(BOB, mem.sid)
    with pytest.raises(NotFound):
        await store.get_memory(ALICE_ELSEWHERE, mem.sid)
    await store.delete_memory(ALICE, mem.sid)
    with pytest.raises(NotFound):
        await store.get_memory(ALICE, mem.sid)
    with pytest.raises(NotFound):
        await store.delete_memory(ALICE, mem.sid)
    again, created = await store.add_memory(ALICE, "temporary fact")
    assert created and again.sid != mem.sid


async def test_search_ranks_by_relevance(store: Store) -> None:
    facts = [
        "Alice works as a Python programmer",
        "Alice's favourite programming language is Python, she writes Python daily",
        "Alice has a cat named Miso",
        "The cat Miso likes tuna",
    ]
    for fact in facts:
        await store.add_memory(ALICE, fact)
    await store.add_memory(BOB, "Bob also writes Python")
    found = [m.content for m in await store.search_memories(ALICE, "python language")]
    assert found == [facts[1], facts[0]]
    assert [m.content for m in await store.search_memories(ALICE, "what is the cat named?", limit=1)] == [
        facts[2]
    ]
    assert await store.search_memories(ALICE, "spaceship") == []
    assert await store.search_memories(ALICE, "") == []
    assert await store.search_memories(ALICE_ELSEWHERE, "python") == []


async def test_search_survives_query_syntax(store: Store) -> None:
    await store.add_memory(ALICE, 'quotes "and" stars * are fine')
    for query in ['"', "*", "AND OR NOT", "NEAR(a b)", "col:value", "^start", "(((", "stars*"]:
        results = await store.search_memories(ALICE, query)
        assert isinstance(results, list)
    assert len(await store.search_memories(ALICE, "stars*")) == 1


async def test_search_sees_deletes(store: Store) -> None:
    mem, _ = await store.add_memory(ALICE, "ephemeral zebra fact")
    assert len(await store.search_memories(ALICE, "zebra")) == 1
    await store.delete_memory(ALICE, mem.sid)
    assert await store.search_memories(ALICE, "zebra") == []
