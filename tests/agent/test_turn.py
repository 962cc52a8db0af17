"""The turn loop against the real embedded store and the real OpenAI provider over HTTP."""

from __future__ import annotations

import anyio
import pytest

from agent.core import Agent, TurnRequest
from agent.events import (
    Done,
    Retrying,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnFailed,
    TurnStarted,
    UsageInfo,
)
from agent.providers.factory import build_provider
from agent.tools.base import Tool, ToolCaller, ToolResult
from agent.tools.registry import ToolRegistry
from agent.turn.loop import FINAL_NOTE
from agent.turn.tools import SUMMARY_CHARS
from store import INTERRUPTED_RESULT, INTERRUPTED_TEXT, MessageStatus, Scope, open_store
from tests.agent.conftest import (
    SCOPE,
    Kit,
    all_messages,
    assert_valid_history,
    main_requests,
    req,
    running,
    system_of,
    tool_args,
    turn,
    with_agent,
    with_llm,
)
from tests.fakes.openai_server import FakeOpenAI, reply_error, reply_hang, reply_text, reply_tool_calls

pytestmark = pytest.mark.anyio


async def test_streamed_text_is_persisted_with_its_channel(agent: Agent, fake: FakeOpenAI) -> None:
    fake.enqueue(reply_text("Hello there, Alice", chunks=3))
    events = await turn(agent, "hi", channel="telegram", sender="tg:7")

    assert isinstance(events[0], TurnStarted)
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    # chunks that wait together for the consumer come joined (agent.events.joined_deltas): this
    # consumer reads after the fact, so the number of deltas is not fixed, their text is
    assert deltas and "".join(deltas) == "Hello there, Alice"
    assert any(isinstance(e, UsageInfo) and e.prompt_tokens > 0 for e in events)
    done = events[-1]
    assert isinstance(done, Done) and done.text == "Hello there, Alice" and done.model == "fake-model"
    msgs = await all_messages(agent.store, done.conversation_id)
    assert [(m.role, m.content, m.channel) for m in msgs] == [
        ("user", "hi", "telegram"),
        ("assistant", "Hello there, Alice", "telegram"),
    ]
    assert msgs[0].sender == "tg:7" and msgs[0].sid == events[0].user_message_id
    assert msgs[1].sid == done.message_id and msgs[1].status == MessageStatus.COMPLETE
    assert msgs[1].completion_tokens > 0 and msgs[1].model == "fake-model"
    conv = await agent.store.conversations.get(SCOPE, done.conversation_id)
    assert conv.last_channel == "telegram" and conv.title == "hi"


async def test_user_message_is_stored_before_the_model_is_called(agent: Agent, fake: FakeOpenAI) -> None:
    fake.enqueue(reply_hang())
    conv = await agent.conversations.new(SCOPE, channel="web")
    seen: list[object] = []

    async def consume() -> None:
        seen.extend([ev async for ev in agent.handle(req("remember this", channel="web"))])

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await fake.wait_for_requests(1)
        # the request is with the model, which has not answered: the message is already durable
        msgs = await all_messages(agent.store, conv.sid)
        assert [(m.role, m.content, m.channel) for m in msgs] == [("user", "remember this", "web")]
        with anyio.fail_after(10):
            assert await agent.stop_turn(SCOPE, conv.sid)
    assert isinstance(seen[-1], TurnFailed) and seen[-1].code == "cancelled"


async def test_one_tool_call_then_answer(agent: Agent, fake: FakeOpenAI, kit: Kit) -> None:
    fake.enqueue(
        reply_tool_calls([("call_1", "count", tool_args(q=1))], text="Let me count."),
        reply_text("Counted once."),
    )
    events = await turn(agent, "count please")
    started = [e for e in events if isinstance(e, ToolStarted)]
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert [(e.call_id, e.name) for e in started] == [("call_1", "count")]
    assert finished[0].ok and finished[0].summary == "count 1 for 1"
    done = events[-1]
    assert isinstance(done, Done) and done.text == "Counted once."
    msgs = await all_messages(agent.store, done.conversation_id)
    assert [m.role for m in msgs] == ["user", "assistant", "tool", "assistant"]
    assert msgs[1].content == "Let me count." and '"call_1"' in msgs[1].tool_calls
    assert (msgs[2].tool_call_id, msgs[2].name, msgs[2].content) == ("call_1", "count", "count 1 for 1")
    second = main_requests(fake)[1]["messages"]
    assert_valid_history(second)
    assert second[-1] == {"role": "tool", "tool_call_id": "call_1", "content": "count 1 for 1"}
    # every LLM call is in the usage log, with its conversation and channel
    usage = (await agent.store.records.list_usage(SCOPE, conversation_id=done.conversation_id)).items
    assert len(usage) == 2 and all(u.ok and u.channel == "cli" and u.provider == "openai" for u in usage)
    assert all(u.prompt_tokens > 0 and u.model == "fake-model" for u in usage)


async def test_parallel_calls_run_concurrently_and_keep_call_order(
    agent: Agent, fake: FakeOpenAI, kit: Kit
) -> None:
    # call_a waits for call_b: it can only finish if both run at the same time, and it finishes last
    fake.enqueue(
        reply_tool_calls(
            [("call_a", "gate", tool_args(key="a", wait_for="b")), ("call_b", "gate", tool_args(key="b"))]
        ),
        reply_text("both done"),
    )
    events = await turn(agent, "go")
    assert kit.gate.order == ["b", "a"]
    assert [e.call_id for e in events if isinstance(e, ToolFinished)] == ["call_b", "call_a"]
    done = events[-1]
    assert isinstance(done, Done)
    msgs = await all_messages(agent.store, done.conversation_id)
    assert [(m.role, m.tool_call_id, m.content) for m in msgs if m.role == "tool"] == [
        ("tool", "call_a", "result a"),
        ("tool", "call_b", "result b"),
    ]
    sent = main_requests(fake)[1]["messages"]
    assert [m.get("tool_call_id") for m in sent if m["role"] == "tool"] == ["call_a", "call_b"]


async def test_unknown_tool_and_bad_arguments_become_error_results(agent: Agent, fake: FakeOpenAI) -> None:
    fake.enqueue(
        reply_tool_calls([("c1", "nope", "{}"), ("c2", "count", "{not json")]),
        reply_text("ok"),
    )
    events = await turn(agent, "x")
    finished = {e.call_id: e for e in events if isinstance(e, ToolFinished)}
    assert not finished["c1"].ok and not finished["c2"].ok
    assert isinstance(events[-1], Done)
    tools = [m for m in main_requests(fake)[1]["messages"] if m["role"] == "tool"]
    assert "unknown tool" in tools[0]["content"] and "invalid arguments" in tools[1]["content"]


async def test_max_iterations_end_with_a_final_call_without_tools(kit: Kit, fake: FakeOpenAI) -> None:
    settings = with_agent(kit.settings, max_tool_iterations=2)
    fake.enqueue(
        reply_tool_calls([("c1", "count", tool_args(q=1))]),
        reply_tool_calls([("c2", "count", tool_args(q=2))]),
        reply_text("Here is what I have."),
    )
    async with running(settings, kit.registry()) as agent:
        events = await turn(agent, "loop")
    reqs = main_requests(fake)
    assert len(reqs) == 3 and kit.count.runs == 2
    assert "tools" in reqs[0] and "tools" in reqs[1] and "tools" not in reqs[2]
    assert FINAL_NOTE in system_of(reqs[2]) and FINAL_NOTE not in system_of(reqs[1])
    assert_valid_history(reqs[2]["messages"])
    assert isinstance(events[-1], Done) and events[-1].text == "Here is what I have."


async def test_a_repeated_identical_call_is_stopped(agent: Agent, fake: FakeOpenAI, kit: Kit) -> None:
    fake.enqueue(
        reply_tool_calls([("c1", "count", '{"q": 5}')]),
        reply_tool_calls([("c2", "count", '{ "q":5 }')]),  # same call, other spelling
        reply_text("Stopping."),
    )
    events = await turn(agent, "repeat")
    assert kit.count.runs == 1
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert finished[0].ok and not finished[1].ok
    reqs = main_requests(fake)
    assert len(reqs) == 3 and "tools" not in reqs[2]
    assert "already made this exact call" in reqs[2]["messages"][-1]["content"]
    assert isinstance(events[-1], Done) and events[-1].text == "Stopping."


async def test_provider_failure_is_one_clear_error_and_a_marker(agent: Agent, fake: FakeOpenAI) -> None:
    fake.enqueue(reply_error(401))
    events = await turn(agent, "hello")
    err = events[-1]
    assert isinstance(err, TurnFailed) and err.code == "provider_error" and "sk-test" not in err.message
    msgs = await all_messages(agent.store, err.conversation_id)
    assert [(m.role, m.status) for m in msgs] == [("user", "complete"), ("assistant", "error")]
    usage = (await agent.store.records.list_usage(SCOPE)).items
    assert len(usage) == 1 and not usage[0].ok
    # the next turn still sends a valid history
    events = await turn(agent, "again")
    assert isinstance(events[-1], Done)
    assert_valid_history(main_requests(fake)[-1]["messages"])


async def test_bad_input_is_refused_and_nothing_is_stored(agent: Agent, fake: FakeOpenAI) -> None:
    conv = await agent.conversations.new(SCOPE, channel="cli")
    too_long = "x" * (agent.settings.agent.max_message_chars + 1)
    for text, code in (("", "invalid_input"), ("   ", "invalid_input"), (too_long, "message_too_large")):
        events = await turn(agent, text)
        assert len(events) == 1 and isinstance(events[0], TurnFailed) and events[0].code == code
    events = await turn(agent, "bin\x00ary")
    assert events == [TurnFailed("invalid_input", "The message contains binary data.")]
    assert await all_messages(agent.store, conv.sid) == [] and fake.requests == []


async def test_a_redelivered_request_gets_the_answer_it_already_got(agent: Agent, fake: FakeOpenAI) -> None:
    """The same request key twice (a client retrying after a lost response): one user message, one
    model call, and the second delivery gets the first answer."""
    first = await turn(agent, "what time is it?", request_key="req-1")
    again = await turn(agent, "what time is it?", request_key="req-1")
    done, replayed = first[-1], again[-1]
    assert isinstance(done, Done) and isinstance(replayed, Done)
    assert (replayed.message_id, replayed.text) == (done.message_id, done.text)
    assert "".join(e.text for e in again if isinstance(e, TextDelta)) == done.text
    assert len(main_requests(fake)) == 1
    msgs = await all_messages(agent.store, done.conversation_id)
    assert [(m.role, m.content) for m in msgs] == [("user", "what time is it?"), ("assistant", done.text)]
    # a new key is a new message
    assert isinstance((await turn(agent, "what time is it?", request_key="req-2"))[-1], Done)
    assert len(main_requests(fake)) == 2


async def test_a_redelivered_request_whose_turn_failed_is_answered_now(
    agent: Agent, fake: FakeOpenAI
) -> None:
    fake.enqueue(reply_error(400, "bad request"))
    failed = await turn(agent, "hello", request_key="req-9")
    assert isinstance(failed[-1], TurnFailed) and failed[-1].code == "provider_error"
    again = await turn(agent, "hello", request_key="req-9")
    assert isinstance(again[-1], Done) and again[-1].text == "echo: hello"
    msgs = await all_messages(agent.store, again[-1].conversation_id)
    assert [m.role for m in msgs if m.role == "user"] == ["user"]  # still one user message


async def test_a_request_without_a_scope_is_an_error_not_a_hang(agent: Agent, fake: FakeOpenAI) -> None:
    """A caller's bug (no Scope) is refused; the agent keeps serving other turns."""
    bad = TurnRequest({"user": "alice"}, "cli", "hello")  # type: ignore[arg-type]
    with anyio.fail_after(10):
        events = [ev async for ev in agent.handle(bad)]
        assert len(events) == 1 and isinstance(events[0], TurnFailed) and events[0].code == "invalid_input"
        assert isinstance((await turn(agent, "still here"))[-1], Done)


async def test_unknown_or_foreign_conversation_is_not_found(agent: Agent, fake: FakeOpenAI) -> None:
    bob = Scope("default", "bob")
    bobs = await agent.conversations.new(bob, channel="cli")
    for cid, code in ((bobs.sid, "not_found"), ("zzzz9", "not_found"), ("Not-An-Id!", "invalid_input")):
        events = await turn(agent, "hi", conversation_id=cid)
        assert isinstance(events[-1], TurnFailed) and events[-1].code == code, cid
    assert await all_messages(agent.store, bobs.sid, scope=bob) == [] and fake.requests == []


async def test_deadline_marks_the_partial_reply_interrupted(kit: Kit, fake: FakeOpenAI) -> None:
    settings = with_agent(kit.settings, turn_deadline_s=0.5)
    fake.enqueue(reply_hang("partial answer"))
    async with running(settings) as agent:
        events = await turn(agent, "slow")
        err = events[-1]
        assert isinstance(err, TurnFailed) and err.code == "deadline"
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "partial answer"
        msgs = await all_messages(agent.store, err.conversation_id)
        assert [(m.role, m.content, m.status) for m in msgs] == [
            ("user", "slow", "complete"),
            ("assistant", "partial answer", "interrupted"),
        ]


async def test_store_unavailable_is_one_clear_error(kit: Kit, fake: FakeOpenAI) -> None:
    async with running(kit.settings) as agent:
        conv = await agent.conversations.new(SCOPE, channel="cli")
        await agent.store.engine.aclose()  # the store goes away under the running agent
        events = await turn(agent, "hello?", conversation_id=conv.sid)
        assert (
            len(events) == 1 and isinstance(events[0], TurnFailed) and events[0].code == "store_unavailable"
        )
        [out] = await turn(agent, "/list")
        assert not out.ok and "store is unavailable" in out.text  # type: ignore[union-attr]
        assert fake.requests == []
        await agent.store.engine.open()  # it comes back: recovery needs nothing
        assert isinstance((await turn(agent, "hello again", conversation_id=conv.sid))[-1], Done)
        msgs = await all_messages(agent.store, conv.sid)
        assert [m.content for m in msgs if m.role == "user"] == ["hello again"]


async def test_a_closed_agent_refuses_turns_politely(kit: Kit) -> None:
    async with running(kit.settings) as agent:
        pass
    events = await turn(agent, "late message")
    assert len(events) == 1 and isinstance(events[0], TurnFailed) and events[0].code == "unavailable"


class StoreKiller(Tool):
    """A tool whose run takes the store away (the disk or the OSIS server going down mid-turn)."""

    name = "kill_store"
    description = "Close the store."
    parameters = {"type": "object", "properties": {}}

    async def run(self, args: dict[str, object], ctx: ToolCaller) -> ToolResult:
        await ctx.store.engine.aclose()
        return ToolResult("closed")


async def test_store_lost_mid_turn_then_recovered(kit: Kit, fake: FakeOpenAI) -> None:
    fake.enqueue(reply_tool_calls([("call_k", "kill_store", "{}")]))
    async with running(kit.settings, ToolRegistry([StoreKiller()])) as agent:
        events = await turn(agent, "do it")
        err = events[-1]
        assert isinstance(err, TurnFailed) and err.code == "store_unavailable"
        assert len(fake.requests) == 1
        await agent.store.engine.open()
        assert isinstance((await turn(agent, "are you back?"))[-1], Done)
        sent = main_requests(fake)[-1]["messages"]
        assert_valid_history(sent)  # the unanswered call was repaired in the copy sent
        msgs = await all_messages(agent.store, err.conversation_id)
        # the next turn's opening marked the cut one: its call got a result, its user message a marker
        assert [m.role for m in msgs] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
        assert (msgs[2].tool_call_id, msgs[2].content) == ("call_k", INTERRUPTED_RESULT)
        assert (msgs[3].status, msgs[3].content) == ("interrupted", INTERRUPTED_TEXT)


async def test_retries_reach_the_channel_as_events_before_the_first_token(kit: Kit, fake: FakeOpenAI) -> None:
    settings = with_llm(kit.settings, max_retries=2, retry_base_delay_s=0.01, retry_max_delay_s=0.02)
    provider = build_provider(settings.llm)
    fake.enqueue(reply_error(503), reply_text("back again"))
    try:
        async with open_store(settings) as store, Agent(settings, store, provider) as agent:
            events = await turn(agent, "hello")
    finally:
        await provider.aclose()
    kinds = [type(e) for e in events]
    assert kinds.index(Retrying) < kinds.index(TextDelta)
    retry = next(e for e in events if isinstance(e, Retrying))
    assert (retry.attempt, retry.max_retries) == (1, 2) and retry.reason
    assert isinstance(events[-1], Done) and events[-1].text == "back again"
    assert 'hero_provider_retries_total{channel="cli"} 1' in agent.metrics.render_lines()


async def test_a_failed_tools_reason_reaches_the_channel_whole(kit: Kit, fake: FakeOpenAI) -> None:
    reason = "error: the service refused: " + " ".join(f"detail{i}" for i in range(60))
    assert len(reason) > SUMMARY_CHARS

    class Refusing(Tool):
        name = "refuse"
        description = "Always fails."
        parameters = {"type": "object", "properties": {}}

        async def run(self, args: dict[str, object], ctx: ToolCaller) -> ToolResult:
            return ToolResult(reason, ok=False)

    fake.enqueue(reply_tool_calls([("c1", "refuse", {})]), reply_text("ok"))
    async with running(kit.settings, ToolRegistry([Refusing()])) as agent:
        events = await turn(agent, "call it")
    failed = next(e for e in events if isinstance(e, ToolFinished))
    assert not failed.ok and failed.summary == reason
