"""The model's view of a conversation: /clear, compaction, serialized turns."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from agent.core import Agent
from agent.events import CommandOutput, Done, TurnEvent, TurnFailed
from agent.prompt.history import SUMMARY_TYPE
from agent.prompt.window import CATCH_UP
from agent.tools.base import Tool, ToolCaller, ToolResult
from agent.tools.registry import ToolRegistry
from store import Message, Role, Store
from tests.agent.conftest import (
    SCOPE,
    Kit,
    all_messages,
    assert_valid_history,
    is_marked,
    main_requests,
    req,
    running,
    system_of,
    turn,
    with_agent,
    with_llm,
)
from tests.fakes.openai_server import FakeOpenAI, reply_error, reply_text, reply_tool_calls
from tests.fakes.sse_scripts import COMPACTION_MARKER, DEFAULT_SUMMARY, MEMORY_MARKER, Reply

pytestmark = pytest.mark.anyio


async def test_clear_hides_earlier_turns_but_keeps_them_archived(agent: Agent, fake: FakeOpenAI) -> None:
    await turn(agent, "first question")
    done = (await turn(agent, "second question"))[-1]
    assert isinstance(done, Done)
    before = len(fake.requests)
    [out] = await turn(agent, "/clear")
    assert isinstance(out, CommandOutput) and out.ok and out.conversation_id == done.conversation_id
    # auto-memory looked at the conversation before it was cleared
    assert any(is_marked(r, MEMORY_MARKER) and "second question" in str(r) for r in fake.requests[before:])

    await turn(agent, "third question")
    sent = main_requests(fake)[-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent if m["role"] != "system"] == [("user", "third question")]
    msgs = await all_messages(agent.store, done.conversation_id)
    assert [m.content for m in msgs if m.role == "user"] == [
        "first question",
        "second question",
        "third question",
    ]


def _tool_then_text(body: dict[str, Any]) -> Reply | None:
    """Each user message gets one tool call, each tool result a long answer."""
    if is_marked(body, MEMORY_MARKER) or is_marked(body, COMPACTION_MARKER):
        return None
    msgs = body["messages"]
    if msgs[-1]["role"] == "user":
        n = sum(1 for m in msgs if m["role"] == "user")
        return reply_tool_calls([(f"call_{n}_{len(msgs)}", "count", json.dumps({"q": n}))])
    return reply_text("Noted. " + "lorem ipsum dolor sit amet " * 20, chunks=2)


async def test_compaction_keeps_tool_pairs_and_the_summary(kit: Kit, fake: FakeOpenAI) -> None:
    settings = with_llm(kit.settings, context_window=2_000, max_output_tokens=200)
    fake.responder = _tool_then_text
    async with running(settings, kit.registry()) as agent:
        for i in range(12):
            events = await turn(agent, f"turn {i}: " + "please remember this detail " * 15)
            assert isinstance(events[-1], Done), events[-1]
            if any(is_marked(r, COMPACTION_MARKER) for r in fake.requests):
                break
        else:
            pytest.fail("no compaction within 12 turns")
        cid = events[-1].conversation_id
        idx = next(i for i, r in enumerate(fake.requests) if is_marked(r, COMPACTION_MARKER))
        # memories are flushed before the older turns are summarised
        assert is_marked(fake.requests[idx - 1], MEMORY_MARKER)
        transcript = fake.requests[idx]["messages"][-1]["content"]
        assert "[called count(" in transcript and "[tool count result: count" in transcript

        after = fake.requests[idx + 1]
        assert not is_marked(after, MEMORY_MARKER) and not is_marked(after, COMPACTION_MARKER)
        assert DEFAULT_SUMMARY in system_of(after)
        assert_valid_history(after["messages"])
        assert "turn 0:" not in str(after["messages"])
        assert after["messages"][-1]["content"].startswith(f"turn {i}:")

        msgs = await all_messages(agent.store, cid)
        [summary] = [m for m in msgs if m.message_type == SUMMARY_TYPE]
        assert summary.role == Role.SYSTEM and summary.content == DEFAULT_SUMMARY
        conv = await agent.store.conversations.get(SCOPE, cid)
        through = summary.extra["summary_through"]
        assert conv.summary_seq == through + 1
        # the split is at a user-turn boundary: the first kept message is a user message
        assert next(m for m in msgs if m.seq > through).role == Role.USER
        # nothing was deleted
        assert sum(1 for m in msgs if m.role == Role.USER) == i + 1

        # the following turns keep using the summary
        await turn(agent, "and now?")
        assert DEFAULT_SUMMARY in system_of(main_requests(fake)[-1])
        assert_valid_history(main_requests(fake)[-1]["messages"])


async def test_compact_command(agent: Agent, fake: FakeOpenAI) -> None:
    [out] = await turn(agent, "/compact")
    assert isinstance(out, CommandOutput) and out.text == "There is no conversation to compact yet."
    await turn(agent, "one")
    [out] = await turn(agent, "/compact")
    assert isinstance(out, CommandOutput) and out.data == {"compacted": False}
    await turn(agent, "two")
    await turn(agent, "three")
    [out] = await turn(agent, "/compact")
    assert isinstance(out, CommandOutput) and out.data == {"compacted": True}
    await turn(agent, "four")
    sent = main_requests(fake)[-1]
    assert DEFAULT_SUMMARY in system_of(sent)
    # /compact keeps the newest turn verbatim
    assert [m["content"] for m in sent["messages"] if m["role"] == "user"] == ["three", "four"]


async def test_two_turns_on_one_conversation_never_interleave(agent: Agent, fake: FakeOpenAI) -> None:
    fake.chunk_delay = 0.05
    conv = await agent.conversations.new(SCOPE, channel="cli")
    results: dict[str, list[TurnEvent]] = {}

    async def one(text: str, channel: str) -> None:
        results[text] = [
            ev async for ev in agent.handle(req(text, channel=channel, conversation_id=conv.sid))
        ]

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "from the web", "web")
            tg.start_soon(one, "from telegram", "telegram")
    assert all(isinstance(evs[-1], Done) for evs in results.values())
    first, second = main_requests(fake)[:2]
    first_text = first["messages"][-1]["content"]
    # the second request was built after the first turn had finished: it carries its answer
    assert [m["content"] for m in second["messages"] if m["role"] != "system"][:2] == [
        first_text,
        f"echo: {first_text}",
    ]
    msgs = await all_messages(agent.store, conv.sid)
    assert [m.role for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[0].channel == msgs[1].channel and msgs[2].channel == msgs[3].channel


async def test_window_cache_sees_writes_from_other_processes(agent: Agent, fake: FakeOpenAI) -> None:
    """The store stays the truth: what another process appends or clears shows in the next turn."""
    cid = (await turn(agent, "one"))[-1].conversation_id  # type: ignore[union-attr]
    st = agent.store
    await st.messages.append(
        SCOPE, Message(conversation_id=cid, role="user", content="from elsewhere", channel="web")
    )
    await st.messages.append(
        SCOPE, Message(conversation_id=cid, role="assistant", content="answered elsewhere", channel="web")
    )
    await turn(agent, "two")
    users = [m["content"] for m in main_requests(fake)[-1]["messages"] if m["role"] == "user"]
    assert users == ["one", "from elsewhere", "two"]
    assert agent.window.hits >= 1

    for i in range(CATCH_UP + 5):  # more than one catch-up read covers
        await st.messages.append(
            SCOPE,
            Message(
                conversation_id=cid,
                role="user" if i % 2 == 0 else "assistant",
                content=f"bulk {i}",
                channel="web",
            ),
        )
    await turn(agent, "three")
    sent = [m["content"] for m in main_requests(fake)[-1]["messages"] if m["role"] != "system"]
    stored = [m.content for m in await st.messages.history(SCOPE, cid, limit=200)]
    assert sent == stored[:-1]  # everything but the answer to "three"

    await st.conversations.clear(SCOPE, cid)  # another process's /clear
    await turn(agent, "four")
    assert [m["content"] for m in main_requests(fake)[-1]["messages"] if m["role"] != "system"] == ["four"]


async def test_failed_compaction_falls_back_to_trimming(kit: Kit, fake: FakeOpenAI) -> None:
    settings = with_llm(kit.settings, context_window=1_000, max_output_tokens=100)

    def responder(body: dict[str, Any]) -> Reply | None:
        return reply_error(500) if is_marked(body, COMPACTION_MARKER) else None

    fake.responder = responder
    async with running(settings) as agent:
        for i in range(6):
            events = await turn(agent, f"message {i} " + "words " * 120)
            assert isinstance(events[-1], Done), events[-1]
        assert any(is_marked(r, COMPACTION_MARKER) for r in fake.requests)
        last = main_requests(fake)[-1]["messages"]
        assert_valid_history(last)
        users = [m["content"] for m in last if m["role"] == "user"]
        assert users[-1].startswith("message 5") and not any(u.startswith("message 0") for u in users)


async def test_busy_when_another_process_holds_the_conversation(kit: Kit) -> None:
    settings = with_agent(kit.settings, turn_deadline_s=0.3)
    async with running(settings) as agent:
        conv = await agent.conversations.new(SCOPE, channel="cli")
        other_process = Store(agent.store.engine)  # another Store: only the store lease separates them
        async with other_process.leases.conversation_lock(SCOPE, conv.sid):
            events = await turn(agent, "hello", conversation_id=conv.sid)
        assert len(events) == 1 and isinstance(events[0], TurnFailed) and events[0].code == "busy"
        assert await all_messages(agent.store, conv.sid) == []
        assert isinstance((await turn(agent, "hello", conversation_id=conv.sid))[-1], Done)


class _BigTool(Tool):
    """``big()``: a long result, as a web page or a file listing would be."""

    name = "big"
    description = "A long result."
    parameters: dict[str, Any] = {"type": "object", "properties": {}}

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        return ToolResult("result line with some words in it\n" * 110)  # ~1,000 tokens


async def test_older_turns_make_room_for_tool_results_within_a_turn(kit: Kit, fake: FakeOpenAI) -> None:
    """The budget holds for every call of a turn, not only the first: when tool results grow the
    request, the oldest whole turns are left out (never the current one, never half a tool pair)."""
    # history budget ~1,600 tokens: two earlier turns (~900) fit, adding the result (~1,000) does not
    settings = with_llm(kit.settings, context_window=1_900, max_output_tokens=200)

    def responder(body: dict[str, Any]) -> Reply | None:
        if is_marked(body, MEMORY_MARKER) or is_marked(body, COMPACTION_MARKER):
            return None
        last = body["messages"][-1]
        if last["role"] == "user" and last["content"].startswith("go"):
            return reply_tool_calls([("call_big", "big", "{}")])
        return None  # the echo

    fake.responder = responder
    async with running(settings, ToolRegistry([_BigTool()])) as agent:
        for i in range(2):
            await turn(agent, f"earlier turn {i}: " + "some words of history " * 40)  # ~230 tokens each way
        before = len(main_requests(fake))
        events = await turn(agent, "go fetch")
        assert isinstance(events[-1], Done), events[-1]
        first, second = main_requests(fake)[before:]
        assert not any(is_marked(r, COMPACTION_MARKER) for r in fake.requests)
        # the first call had room for the whole history
        assert "earlier turn 0:" in str(first["messages"]) and "earlier turn 1:" in str(first["messages"])
        # with the tool result in, the oldest turn went (the next one fits and stays); the current
        # turn is whole
        assert "earlier turn 0:" not in str(second["messages"])
        assert "earlier turn 1:" in str(second["messages"])
        assert_valid_history(second["messages"])
        tail = [m for m in second["messages"] if m["role"] != "system"][-3:]
        assert [m["role"] for m in tail] == ["user", "assistant", "tool"]
        assert tail[0]["content"] == "go fetch" and tail[2]["content"].startswith("result line")
        # the store keeps everything
        msgs = await all_messages(agent.store, events[-1].conversation_id)
        assert sum(1 for m in msgs if m.content.startswith("earlier turn 0:")) == 1
