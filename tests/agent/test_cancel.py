"""Cancellation leaves a consistent history: the partial reply marked interrupted, every issued tool
call answered, and the next request to the model valid."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import anyio
import pytest

from agent.core import Agent
from agent.events import Done, TextDelta, ToolStarted, TurnEvent, TurnFailed
from agent.prompt.history import INTERRUPTED_MARK
from agent.turn.loop import CANCELLED_RESULT
from store import INTERRUPTED_TEXT, Message
from tests.agent.conftest import (
    SCOPE,
    Kit,
    all_messages,
    assert_valid_history,
    main_requests,
    req,
    running,
    turn,
)
from tests.fakes.openai_server import FakeOpenAI, reply_text, reply_tool_calls

pytestmark = pytest.mark.anyio


async def test_consumer_leaving_mid_stream(agent: Agent, fake: FakeOpenAI) -> None:
    fake.enqueue(reply_text("one two three four five six", chunks=6, chunk_delay=0.3))
    conv = await agent.conversations.new(SCOPE, channel="cli")
    got: list[TurnEvent] = []
    stream = agent.handle(req("tell me"))
    assert isinstance(stream, AsyncGenerator)  # a turn is an async generator: it can be closed
    with anyio.fail_after(10):
        async for ev in stream:
            got.append(ev)
            if isinstance(ev, TextDelta):
                break
        await stream.aclose()  # the client went away after the first token
    partial = "".join(e.text for e in got if isinstance(e, TextDelta))
    assert partial and partial != "one two three four five six"
    msgs = await all_messages(agent.store, conv.sid)
    assert [(m.role, m.status) for m in msgs] == [("user", "complete"), ("assistant", "interrupted")]
    assert msgs[1].content == partial
    assert not agent.is_running(SCOPE, conv.sid)

    events = await turn(agent, "go on")
    assert isinstance(events[-1], Done)
    sent = main_requests(fake)[-1]["messages"]
    assert_valid_history(sent)
    assert {"role": "assistant", "content": f"{partial}\n{INTERRUPTED_MARK}"} in sent


async def test_consumer_task_cancelled_mid_stream(agent: Agent, fake: FakeOpenAI) -> None:
    fake.enqueue(reply_text("alpha beta gamma delta", chunks=4, chunk_delay=0.3))
    conv = await agent.conversations.new(SCOPE, channel="cli")
    first = anyio.Event()

    async def consume() -> None:
        async for ev in agent.handle(req("tell me")):
            if isinstance(ev, TextDelta):
                first.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await first.wait()
            tg.cancel_scope.cancel()  # Ctrl-C in the CLI
    msgs = await all_messages(agent.store, conv.sid)
    assert [(m.role, m.status) for m in msgs] == [("user", "complete"), ("assistant", "interrupted")]
    assert msgs[1].content.startswith("alpha")


async def test_closing_the_agent_mid_stream_stops_the_turn_and_frees_the_conversation(
    kit: Kit, fake: FakeOpenAI
) -> None:
    """A turn's task is the Agent's own (not a task group's): ``aclose`` cancels it through its scope
    and waits for its cleanup, which stores the partial reply and releases the turn lease."""
    fake.enqueue(reply_text("one two three four five six", chunks=6, chunk_delay=0.3))
    got: list[TurnEvent] = []
    first = anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:  # the consumer outlives the Agent
            async with running(kit.settings, kit.registry()) as agent:
                conv = await agent.conversations.new(SCOPE, channel="cli")

                async def consume() -> None:
                    async for ev in agent.handle(req("tell me")):
                        got.append(ev)
                        if isinstance(ev, TextDelta):
                            first.set()

                tg.start_soon(consume)
                await first.wait()
            # leaving ``running`` closed the Agent (then the store) under the running turn
            assert not agent.busy
    assert isinstance(got[-1], TurnFailed) and got[-1].code == "cancelled"
    fake.enqueue(reply_text("still here"))
    async with running(kit.settings, kit.registry()) as again:  # a restart: the lease was released
        msgs = await all_messages(again.store, conv.sid)
        assert [(m.role, m.status) for m in msgs] == [("user", "complete"), ("assistant", "interrupted")]
        assert msgs[1].content.startswith("one")
        events = await turn(again, "go on", conversation_id=conv.sid)
    assert isinstance(events[-1], Done) and events[-1].text == "still here"


async def test_stop_mid_tool_answers_every_call(agent: Agent, fake: FakeOpenAI, kit: Kit) -> None:
    fake.enqueue(
        reply_tool_calls([("call_1", "block", "{}"), ("call_2", "count", '{"q": 1}')], text="Working on it."),
    )
    conv = await agent.conversations.new(SCOPE, channel="cli")
    events: list[TurnEvent] = []

    async def consume() -> None:
        events.extend([ev async for ev in agent.handle(req("do it"))])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await kit.block.started.wait()
            out = [ev async for ev in agent.handle(req("/stop"))]
    assert out[0].text == "Stopped."  # type: ignore[union-attr]
    assert any(isinstance(e, ToolStarted) for e in events)
    assert isinstance(events[-1], TurnFailed) and events[-1].code == "cancelled"
    msgs = await all_messages(agent.store, conv.sid)
    assert [m.role for m in msgs] == ["user", "assistant", "tool", "tool", "assistant"]
    # no text came after the calls: the turn ends with the visible interrupted marker
    assert (msgs[-1].status, msgs[-1].content) == ("interrupted", INTERRUPTED_TEXT)
    results = {m.tool_call_id: m for m in msgs if m.role == "tool"}
    assert results["call_1"].content == CANCELLED_RESULT and results["call_1"].status == "error"
    # a call that had finished keeps its real result
    assert results["call_2"].content == "count 1 for 1"
    # the audit log saw both executions (the cancelled one as cancelled)
    audit = (await agent.store.records.list_audit(SCOPE, conversation_id=conv.sid)).items
    assert {(a.tool, a.ok) for a in audit} == {("block", False), ("count", True)}

    assert isinstance((await turn(agent, "what happened?"))[-1], Done)
    sent = main_requests(fake)[-1]["messages"]
    assert_valid_history(sent)
    assert any(m["role"] == "tool" and m["content"] == CANCELLED_RESULT for m in sent)


async def test_stop_with_nothing_running(agent: Agent) -> None:
    out = [ev async for ev in agent.handle(req("/stop"))]
    assert out[0].text == "Nothing is running." and out[0].data == {"stopped": False}  # type: ignore[union-attr]


async def test_history_with_a_dangling_call_is_repaired(agent: Agent, fake: FakeOpenAI) -> None:
    """A crash between persisting the tool call and its result (no cleanup ran): the next request
    still answers the call, and an orphan result is dropped."""
    conv = await agent.conversations.new(SCOPE, channel="cli")
    st = agent.store
    await st.messages.append(
        SCOPE, Message(conversation_id=conv.sid, role="user", content="before the crash", channel="cli")
    )
    await st.messages.append(
        SCOPE,
        Message(
            conversation_id=conv.sid,
            role="assistant",
            content="",
            channel="cli",
            tool_calls='[{"id": "lost", "name": "count", "arguments": "{}"}]',
        ),
    )
    await st.messages.append(
        SCOPE,
        Message(
            conversation_id=conv.sid,
            role="tool",
            content="stray",
            channel="cli",
            tool_call_id="ghost",
            name="count",
        ),
    )
    assert isinstance((await turn(agent, "after the restart"))[-1], Done)
    sent = main_requests(fake)[-1]["messages"]
    assert_valid_history(sent)
    assert [m.get("tool_call_id") for m in sent if m["role"] == "tool"] == ["lost"]


async def test_consumer_stopping_at_done_loses_nothing(agent: Agent, fake: FakeOpenAI) -> None:
    stream = agent.handle(req("hi"))
    assert isinstance(stream, AsyncGenerator)
    with anyio.fail_after(10):
        async for ev in stream:
            if isinstance(ev, Done):
                break
        await stream.aclose()
    assert isinstance(ev, Done)
    msgs = await all_messages(agent.store, ev.conversation_id)
    assert [(m.role, m.status) for m in msgs] == [("user", "complete"), ("assistant", "complete")]
    assert len((await agent.store.records.list_usage(SCOPE)).items) == 1  # booked after Done, still booked
    assert isinstance((await turn(agent, "next"))[-1], Done)  # and the lock was released
