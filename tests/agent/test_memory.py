"""Auto-memory: extracted after a turn, recalled in other conversations and after a restart, never
recalled into a group."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from agent.core import Agent
from agent.events import Done
from agent.memory import parse_memories, rank_memories
from store import Memory, Scope
from tests.agent.conftest import SCOPE, Kit, is_marked, main_requests, req, running, system_of, turn
from tests.fakes.openai_server import FakeOpenAI, reply_text
from tests.fakes.sse_scripts import MEMORY_MARKER, Reply
from tests.waiting import until

pytestmark = pytest.mark.anyio

FACT = "The user's name is Ada and she keeps bees."


def extraction_says(fake: FakeOpenAI, *facts: str) -> list[dict[str, Any]]:
    """Script the extraction answer; returns the list the extraction requests are recorded in."""
    seen: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> Reply | None:
        if is_marked(body, MEMORY_MARKER):
            seen.append(body)
            listed = ", ".join(f'"{f}"' for f in facts)
            return reply_text(f'```json\n{{"memories": [{listed}]}}\n```', chunks=2)
        return None

    fake.responder = responder
    return seen


async def wait_for_memories(agent: Agent, scope: Scope, n: int) -> list[Memory]:
    async def stored() -> list[Memory]:
        items = (await agent.store.memories.list(scope)).items
        return items if len(items) >= n else []

    return await until(stored, what=f"{n} memories in {scope}")


async def test_extracted_in_one_conversation_recalled_in_another_and_after_restart(
    kit: Kit, fake: FakeOpenAI
) -> None:
    extractions = extraction_says(fake, FACT)
    async with running(kit.settings) as agent:
        first = await turn(agent, "Hi, I'm Ada. My bees are swarming!", channel="telegram")
        assert isinstance(first[-1], Done)
        [mem] = await wait_for_memories(agent, SCOPE, 1)  # debounced, off the reply path
        assert mem.content == FACT and mem.source_channel == "telegram"
        assert mem.source_conversation_id == first[-1].conversation_id
        assert "My bees are swarming" in extractions[0]["messages"][-1]["content"]

        await agent.run_command(req("/new"))
        await turn(agent, "What do my bees need in winter?")
        assert FACT in system_of(main_requests(fake)[-1])
        # the second extraction is shown what is already known, and the duplicate is dropped
        await agent.memory.flush(SCOPE, (await agent.conversations.active(SCOPE, channel="cli")).sid)  # type: ignore[union-attr]
        assert FACT in system_of(extractions[-1])
        assert len((await agent.store.memories.list(SCOPE)).items) == 1

    async with running(kit.settings) as agent:  # a restart on the same data dir
        await agent.run_command(req("/new"))
        await turn(agent, "Remind me who I am")
        assert FACT in system_of(main_requests(fake)[-1])


async def test_never_recalled_into_a_group_and_not_extracted_there(kit: Kit, fake: FakeOpenAI) -> None:
    extractions = extraction_says(fake, FACT)
    group = Scope("default", "tg-group:-100")
    async with running(kit.settings) as agent:
        await turn(agent, "I'm Ada")
        await wait_for_memories(agent, SCOPE, 1)
        before = len(extractions)
        events = await turn(
            agent, "who am I?", scope=group, sender="alice", is_group=True, channel="telegram"
        )
        assert isinstance(events[-1], Done)
        sent = main_requests(fake)[-1]
        assert FACT not in system_of(sent) and "Ada" not in system_of(sent)
        assert sent["messages"][-1]["content"] == "alice: who am I?"  # the model sees who spoke
        conv = await agent.store.conversations.get(group, events[-1].conversation_id)
        assert conv.is_group
        assert await agent.memory.flush(group, conv.sid) == 0
    # closing flushed everything pending: still no extraction ran for the group
    assert len(extractions) == before
    assert not any("who am I" in str(b["messages"]) for b in extractions)


async def test_garbage_extraction_answer_adds_nothing(kit: Kit, fake: FakeOpenAI) -> None:
    fake.responder = lambda body: (
        reply_text("I think {not json", chunks=1) if is_marked(body, MEMORY_MARKER) else None
    )
    async with running(kit.settings) as agent:
        events = await turn(agent, "hello")
        assert await agent.memory.flush(SCOPE, events[-1].conversation_id) == 0  # type: ignore[union-attr]
        assert (await agent.store.memories.list(SCOPE)).items == []


def test_parse_memories_tolerates_what_models_send() -> None:
    assert parse_memories('{"memories": ["a", " b "]}') == ["a", "b"]
    assert parse_memories('```json\n{"memories": ["a"]}\n```') == ["a"]
    assert parse_memories('Sure! Here you go: {"memories": ["a"]} Hope that helps.') == ["a"]
    assert parse_memories('["a", "", 3, {"content": "c"}]') == ["a", "c"]
    assert parse_memories("no facts today") == []
    assert parse_memories('{"memories": "not a list"}') == []


def test_recall_ranks_relevance_then_recency() -> None:
    mems = [
        Memory(sid="1", content="Likes green tea", created_at=1),
        Memory(sid="2", content="Has a dog called Rex", created_at=2),
        Memory(sid="3", content="Lives in Ghent", created_at=3),
    ]
    assert [m.sid for m in rank_memories(mems, "what tea should I buy", 2)] == ["1", "3"]
    assert [m.sid for m in rank_memories(mems + mems[:1], "hello", 3)] == ["3", "2", "1"]


async def test_extraction_is_debounced_and_flushed_on_close(kit: Kit, fake: FakeOpenAI) -> None:
    extractions = extraction_says(fake)
    settings = dataclasses.replace(
        kit.settings, memory=dataclasses.replace(kit.settings.memory, debounce_s=3600)
    )
    async with running(settings) as agent:
        await turn(agent, "first thing")
        await turn(agent, "second thing")
        assert extractions == []  # still quiet-waiting
    # closing ran the one pending extraction, covering both turns
    assert len(extractions) == 1
    text = extractions[0]["messages"][-1]["content"]
    assert "first thing" in text and "second thing" in text
