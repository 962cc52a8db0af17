"""Conformance: memories (hash dedupe, list, delete, relevance-ranked search), scoped."""

from __future__ import annotations

import pytest

from store.api.store import Store, memory_hash
from store.errors import InvalidInput, NotFound
from tests.store.conftest import ALICE, ALICE_ELSEWHERE, BOB
from tests.store.helpers import next_ms

pytestmark = pytest.mark.anyio


async def test_add_dedupes_by_normalised_content(store: Store) -> None:
    mem, created = await store.memories.add(ALICE, "  Alice likes green tea ", source_channel="cli")
    assert created
    assert mem.content == "Alice likes green tea"
    assert mem.hash == memory_hash("alice LIKES   green tea")
    same, created_again = await store.memories.add(ALICE, "alice likes\tgreen   TEA")
    assert not created_again
    assert same == mem
    assert len((await store.memories.list(ALICE)).items) == 1
    bobs, bob_created = await store.memories.add(BOB, "Alice likes green tea")
    assert bob_created and bobs.user_id == "bob"


async def test_empty_or_oversized_memory_refused(store: Store) -> None:
    with pytest.raises(InvalidInput):
        await store.memories.add(ALICE, "   ")
    with pytest.raises(InvalidInput):
        await store.memories.add(ALICE, "x" * 5000)
    assert (await store.memories.list(ALICE)).items == []


async def test_list_newest_first_with_paging(store: Store) -> None:
    made = []
    for i in range(5):
        made.append((await store.memories.add(ALICE, f"fact number {i}"))[0])
        await next_ms()
    first = await store.memories.list(ALICE, limit=3)
    rest = await store.memories.list(ALICE, limit=3, cursor=first.next_cursor)
    assert [m.sid for m in first.items + rest.items] == [m.sid for m in reversed(made)]
    assert rest.next_cursor is None


async def test_delete_and_re_add(store: Store) -> None:
    mem, _ = await store.memories.add(ALICE, "temporary fact")
    with pytest.raises(NotFound):
        await store.memories.delete(BOB, mem.sid)
    with pytest.raises(NotFound):
        await store.memories.get(ALICE_ELSEWHERE, mem.sid)
    await store.memories.delete(ALICE, mem.sid)
    with pytest.raises(NotFound):
        await store.memories.get(ALICE, mem.sid)
    with pytest.raises(NotFound):
        await store.memories.delete(ALICE, mem.sid)
    again, created = await store.memories.add(ALICE, "temporary fact")
    assert created and again.sid != mem.sid


async def test_search_ranks_by_relevance(store: Store) -> None:
    facts = [
        "Alice works as a Python programmer",
        "Alice's favourite programming language is Python, she writes Python daily",
        "Alice has a cat named Miso",
        "The cat Miso likes tuna",
    ]
    for fact in facts:
        await store.memories.add(ALICE, fact)
    await store.memories.add(BOB, "Bob also writes Python")
    found = [m.content for m in await store.memories.search(ALICE, "python language")]
    assert found == [facts[1], facts[0]]
    assert [m.content for m in await store.memories.search(ALICE, "what is the cat named?", limit=1)] == [
        facts[2]
    ]
    assert await store.memories.search(ALICE, "spaceship") == []
    assert await store.memories.search(ALICE, "") == []
    assert await store.memories.search(ALICE_ELSEWHERE, "python") == []


async def test_search_survives_query_syntax(store: Store) -> None:
    await store.memories.add(ALICE, 'quotes "and" stars * are fine')
    for query in ['"', "*", "AND OR NOT", "NEAR(a b)", "col:value", "^start", "(((", "stars*"]:
        results = await store.memories.search(ALICE, query)
        assert isinstance(results, list)
    assert len(await store.memories.search(ALICE, "stars*")) == 1


async def test_search_sees_deletes(store: Store) -> None:
    mem, _ = await store.memories.add(ALICE, "ephemeral zebra fact")
    assert len(await store.memories.search(ALICE, "zebra")) == 1
    await store.memories.delete(ALICE, mem.sid)
    assert await store.memories.search(ALICE, "zebra") == []


async def test_recall_reads_the_matching_and_the_newest_memories_scoped(store: Store) -> None:
    tea, _ = await store.memories.add(ALICE, "Alice likes green tea")
    await next_ms()
    await store.memories.add(ALICE, "Alice lives in Ghent")
    await next_ms()
    newest, _ = await store.memories.add(ALICE, "Alice plays the cello")
    await store.memories.add(BOB, "Bob likes green tea too")
    matching, recent = await store.memories.recall(ALICE, "which tea do I like?", 5, 2)
    assert [m.sid for m in matching] == [tea.sid]  # the words' match, the user's only
    assert [m.content for m in recent] == [newest.content, "Alice lives in Ghent"]
    assert await store.memories.recall(ALICE, "   ", 5, 0) == ([], [])  # nothing to read
    only_recent = await store.memories.recall(ALICE, "tea", 0, 1)
    assert only_recent == ([], [newest])
    assert (await store.memories.recall(ALICE_ELSEWHERE, "tea", 5, 5)) == ([], [])
