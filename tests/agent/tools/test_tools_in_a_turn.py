"""Tools called by the model inside a real turn: the Agent from ``open_agent`` (real OpenAI provider
against FakeOpenAI on 127.0.0.1, real embedded store), with an MCP stdio server and http_fetch."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agent.core import Agent, TurnRequest
from agent.events import Done, ToolFinished, ToolStarted, TurnEvent
from agent.factory import open_agent
from config.settings import (
    LLMSettings,
    MCPServerSettings,
    MemorySettings,
    Settings,
    StoreSettings,
    ToolsSettings,
)
from store import Scope, open_store
from tests.agent.tools.conftest import serve
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_text, reply_tool_calls

SERVER = Path(__file__).resolve().parents[2] / "fakes" / "mcp_stdio_server.py"
SCOPE = Scope("default", "alice")

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def settings_for(fake: FakeOpenAI, data: Path) -> Settings:
    mcp = MCPServerSettings(name="calc", command=sys.executable, args=(str(SERVER),))
    return Settings(
        llm=LLMSettings(base_url=fake.base_url, api_key="sk-test", model="fake-model", max_retries=0),
        memory=MemorySettings(enabled=False),
        store=StoreSettings(path=data),
        tools=ToolsSettings(mcp_servers=(mcp,)),
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


async def one_turn(agent: Agent, text: str) -> list[TurnEvent]:
    with anyio.fail_after(30):
        return [ev async for ev in agent.handle(TurnRequest(scope=SCOPE, channel="cli", text=text))]


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


async def test_the_model_calls_an_mcp_tool_and_a_refused_fetch(fake: FakeOpenAI, tmp_path: Path) -> None:
    settings = settings_for(fake, tmp_path / "data")
    fake.enqueue(
        reply_tool_calls(
            [
                ("call_1", "calc__add", {"a": 2, "b": 40}),
                ("call_2", "http_fetch", {"url": "http://127.0.0.1:9/private"}),
            ]
        ),
        reply_text("2 + 40 = 42, and that address is off limits."),
    )
    async with open_store(settings) as store, open_agent(settings, store) as agent:
        events = await one_turn(agent, "add 2 and 40, then fetch my router page")
        audit = [(a.tool, a.ok) for a in reversed((await store.records.list_audit(SCOPE)).items)]

    offered = [t["function"]["name"] for t in fake.requests[0]["tools"]]
    assert "calc__add" in offered and "http_fetch" in offered and "memory_save" in offered
    started = [e.name for e in events if isinstance(e, ToolStarted)]
    finished = {e.name: e.ok for e in events if isinstance(e, ToolFinished)}
    assert started == ["calc__add", "http_fetch"]
    assert finished == {"calc__add": True, "http_fetch": False}
    assert isinstance(events[-1], Done) and "42" in events[-1].text

    results = {m["tool_call_id"]: m["content"] for m in tool_messages(fake.requests[1])}
    assert results["call_1"] == "42"
    assert results["call_2"].startswith("error: refused to fetch http://127.0.0.1:9/private")
    assert "loopback" in results["call_2"]
    assert sorted(audit) == [("calc__add", True), ("http_fetch", False)]


async def test_the_agent_runs_when_an_mcp_server_cannot_start(fake: FakeOpenAI, tmp_path: Path) -> None:
    settings = settings_for(fake, tmp_path / "data")
    broken = MCPServerSettings(name="broken", command="/nonexistent/mcp")
    settings = Settings(
        llm=settings.llm,
        memory=settings.memory,
        store=settings.store,
        tools=ToolsSettings(mcp_servers=(broken,)),
    )
    async with open_store(settings) as store, open_agent(settings, store) as agent:
        events = await one_turn(agent, "hello")
    assert isinstance(events[-1], Done) and events[-1].text == "echo: hello"
    offered = [t["function"]["name"] for t in fake.requests[0]["tools"]]
    assert not any(name.startswith("broken__") for name in offered)
    assert "current_datetime" in offered


def _nul_page() -> Starlette:
    async def page(request: Request) -> Response:
        body = b"<html><title>bin\x00ary</title><body><p>left\x00right \x01\x02 end</p></body></html>"
        return Response(body, media_type="text/html; charset=utf-8")

    return Starlette(routes=[Route("/nul", page)])


async def test_tool_output_no_store_takes_is_made_storable_and_the_turn_completes(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """A fetched page with NUL bytes and an MCP tool answering junk (issue 10, point 3): before the
    fix the NUL ended the turn as ``invalid_input`` and left a stored tool call without its result."""
    base = settings_for(fake, tmp_path / "data")
    settings = replace(
        base,
        agent=replace(base.agent, max_tool_result_chars=2_000),
        tools=replace(base.tools, http_allow_cidrs=("127.0.0.1/32",), http_timeout_s=10.0),
    )
    async with serve(_nul_page()) as site:
        fake.enqueue(
            reply_tool_calls(
                [
                    ("call_1", "http_fetch", {"url": f"{site}/nul"}),
                    ("call_2", "calc__junk", {"size": 5_000}),
                ]
            ),
            reply_text("done"),
        )
        async with open_store(settings) as store, open_agent(settings, store) as agent:
            events = await one_turn(agent, "fetch that page and make some junk")
            conv = (await store.conversations.list(SCOPE)).items[0]
            stored = (await store.messages.list(SCOPE, conv.sid, limit=50)).items
            audit = (await store.records.list_audit(SCOPE)).items
            text = agent.metrics.render_lines()

    assert isinstance(events[-1], Done) and events[-1].text == "done"
    assert [(m.role, m.status) for m in stored] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("tool", "complete"),
        ("tool", "complete"),
        ("assistant", "complete"),
    ]
    results = {m.tool_call_id: m.content for m in stored if m.role == "tool"}
    assert "left\ufffdright" in results["call_1"] and "\x00" not in results["call_1"]
    junk = results["call_2"]
    assert junk.startswith("before\ufffdafter \ufffd[31mred\ufffd bell\ufffd")
    assert len(junk) <= 2_000 and "[truncated: showing the first" in junk
    sent = {m["tool_call_id"]: m["content"] for m in tool_messages(fake.requests[1])}
    assert sent == results
    assert sorted((a.tool, a.ok) for a in audit) == [("calc__junk", True), ("http_fetch", True)]
    assert all("\x00" not in a.result_summary for a in audit)
    assert 'hero_tool_results_sanitised_total{tool="calc__junk"} 1' in text
    assert 'hero_tool_results_sanitised_total{tool="http_fetch"} 1' in text
    assert 'hero_tool_results_truncated_total{tool="calc__junk"} 1' in text
