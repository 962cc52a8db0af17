"""``open_agent`` end to end: the configured provider (with its retries), the built-in tools, the
Agent, over real HTTP to the fake servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.events import Done, ToolFinished
from agent.factory import open_agent
from store import open_store
from tests.agent.conftest import SCOPE, all_messages, main_requests, make_settings, turn, with_llm
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI, reply_error, reply_text, reply_tool_calls

pytestmark = pytest.mark.anyio


async def test_openai_turn_with_a_builtin_tool_and_a_retry(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        settings = with_llm(make_settings(tmp_path, fake.base_url), max_retries=2, retry_base_delay_s=0.01)
        fake.enqueue(
            reply_error(503, headers={"retry-after": "0"}),
            reply_tool_calls([("call_m", "memory_save", json.dumps({"content": "Likes green tea"}))]),
            reply_text("Noted: green tea."),
        )
        async with open_store(settings) as store, open_agent(settings, store) as agent:
            await agent.ping()
            events = await turn(agent, "I like green tea")
            done = events[-1]
            assert isinstance(done, Done) and done.text == "Noted: green tea."
            assert [e.ok for e in events if isinstance(e, ToolFinished)] == [True]
            assert [m.content for m in (await store.memories.list(SCOPE)).items] == ["Likes green tea"]
            audit = (await store.records.list_audit(SCOPE)).items
            assert [(a.tool, a.ok, a.conversation_id) for a in audit] == [
                ("memory_save", True, done.conversation_id)
            ]
            reqs = main_requests(fake)
            assert {t["function"]["name"] for t in reqs[0]["tools"]} >= {"memory_save", "current_datetime"}


async def test_anthropic_turn_end_to_end(tmp_path: Path) -> None:
    async with FakeAnthropic() as fake:
        settings = with_llm(make_settings(tmp_path, fake.base_url), provider="anthropic")
        fake.enqueue(
            reply_tool_calls([("toolu_1", "current_datetime", {})], text="Checking the clock."),
            reply_text("It is later than you think."),
        )
        async with open_store(settings) as store, open_agent(settings, store) as agent:
            events = await turn(agent, "what time is it?", channel="api")
            done = events[-1]
            assert isinstance(done, Done) and done.text == "It is later than you think."
            msgs = await all_messages(store, done.conversation_id)
            assert [m.role for m in msgs] == ["user", "assistant", "tool", "assistant"]
            assert all(m.channel == "api" for m in msgs)
            second = fake.requests[1]
            blocks = [
                b
                for m in second["messages"]
                for b in (m["content"] if isinstance(m["content"], list) else [])
            ]
            assert any(b.get("type") == "tool_use" and b.get("id") == "toolu_1" for b in blocks)
            assert any(b.get("type") == "tool_result" and b.get("tool_use_id") == "toolu_1" for b in blocks)
            usage = (await store.records.list_usage(SCOPE, conversation_id=done.conversation_id)).items
            assert len(usage) == 2 and {u.provider for u in usage} == {"anthropic"}
