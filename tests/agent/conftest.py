"""Agent-core fixtures: the real embedded store in a tmp dir, the real OpenAI provider talking HTTP to
``FakeOpenAI`` on 127.0.0.1, and a real :class:`ToolRegistry` with tools whose timing tests control."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.core import Agent, TurnRequest
from agent.events import TurnEvent
from agent.providers.openai import OpenAIProvider
from agent.tools.base import Tool, ToolCaller, ToolResult
from agent.tools.registry import ToolRegistry
from config.settings import AgentSettings, LLMSettings, MemorySettings, Settings, StoreSettings
from store import Scope, Store, open_store
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import COMPACTION_MARKER, MEMORY_MARKER

SCOPE = Scope("default", "alice")


class GateTool(Tool):
    """``gate(key, wait_for?)``: waits until the call named ``wait_for`` has finished, then finishes
    itself; lets a test make the second of two parallel calls finish first."""

    name = "gate"
    description = "Finish after another gate call."
    parameters = {
        "type": "object",
        "properties": {"key": {"type": "string"}, "wait_for": {"type": "string"}},
        "required": ["key"],
    }

    def __init__(self) -> None:
        self.finished: dict[str, anyio.Event] = {}
        self.order: list[str] = []

    def event(self, key: str) -> anyio.Event:
        return self.finished.setdefault(key, anyio.Event())

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        if args.get("wait_for"):
            await self.event(args["wait_for"]).wait()
        self.order.append(args["key"])
        self.event(args["key"]).set()
        return ToolResult(f"result {args['key']}")


class CountTool(Tool):
    """``count(q)``: answers at once and counts its runs."""

    name = "count"
    description = "Count calls."
    parameters = {"type": "object", "properties": {"q": {"type": "integer"}}}

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        self.runs += 1
        return ToolResult(f"count {self.runs} for {args.get('q')}")


class BlockTool(Tool):
    """``block()``: never finishes on its own (a tool stuck on the network)."""

    name = "block"
    description = "Block."
    parameters = {"type": "object", "properties": {}}

    def __init__(self) -> None:
        self.started = anyio.Event()

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        self.started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


@dataclasses.dataclass
class Kit:
    fake: FakeOpenAI
    settings: Settings
    gate: GateTool
    count: CountTool
    block: BlockTool

    def registry(self) -> ToolRegistry:
        return ToolRegistry([self.gate, self.count, self.block])


def make_settings(data_dir: Path, base_url: str, **agent: Any) -> Settings:
    return Settings(
        agent=AgentSettings(**agent),
        llm=LLMSettings(base_url=base_url, api_key="sk-test", model="fake-model", max_retries=0),
        memory=MemorySettings(debounce_s=0.05),
        store=StoreSettings(path=data_dir),
    )


def with_agent(settings: Settings, **agent: Any) -> Settings:
    return dataclasses.replace(settings, agent=dataclasses.replace(settings.agent, **agent))


def with_llm(settings: Settings, **llm: Any) -> Settings:
    return dataclasses.replace(settings, llm=dataclasses.replace(settings.llm, **llm))


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
def kit(fake: FakeOpenAI, tmp_path: Path) -> Kit:
    return Kit(fake, make_settings(tmp_path / "data", fake.base_url), GateTool(), CountTool(), BlockTool())


@asynccontextmanager
async def running(settings: Settings, tools: ToolRegistry | None = None) -> AsyncIterator[Agent]:
    """A started Agent on a freshly opened store (a new one per call: also a "restart")."""
    provider = OpenAIProvider(settings.llm)
    try:
        async with open_store(settings) as store, Agent(settings, store, provider, tools) as agent:
            yield agent
    finally:
        await provider.aclose()


@pytest.fixture
async def agent(kit: Kit) -> AsyncIterator[Agent]:
    async with running(kit.settings, kit.registry()) as a:
        yield a


def req(text: str, *, scope: Scope = SCOPE, channel: str = "cli", **kw: Any) -> TurnRequest:
    return TurnRequest(scope=scope, channel=channel, text=text, **kw)


async def turn(agent: Agent, text: str, **kw: Any) -> list[TurnEvent]:
    """Every event of one turn (or command), under a deadline."""
    with anyio.fail_after(20):
        return [ev async for ev in agent.handle(req(text, **kw))]


def main_requests(fake: FakeOpenAI) -> list[dict[str, Any]]:
    """The recorded requests that are turn steps (not memory extraction or compaction)."""
    return [
        r for r in fake.requests if not is_marked(r, MEMORY_MARKER) and not is_marked(r, COMPACTION_MARKER)
    ]


def is_marked(body: dict[str, Any], marker: str) -> bool:
    return any(
        m.get("role") == "system" and marker in str(m.get("content")) for m in body.get("messages", [])
    )


def system_of(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content")) for m in body["messages"] if m.get("role") == "system")


def assert_valid_history(messages: Sequence[dict[str, Any]]) -> None:
    """What every provider requires: a user message first (after system), every tool call answered
    right after its assistant message, no tool result without its call."""
    body = [m for m in messages if m["role"] != "system"]
    assert body and body[0]["role"] == "user", body[:1]
    open_ids: list[str] = []
    for m in body:
        if m["role"] == "tool":
            assert m["tool_call_id"] in open_ids, f"orphan tool result {m}"
            open_ids.remove(m["tool_call_id"])
            continue
        assert not open_ids, f"unanswered tool calls {open_ids} before {m}"
        if m["role"] == "assistant":
            open_ids = [c["id"] for c in m.get("tool_calls") or []]
    assert not open_ids, f"unanswered tool calls {open_ids} at the end"


def tool_args(**kw: Any) -> str:
    return json.dumps(kw)


async def all_messages(store: Store, conversation_id: str, scope: Scope = SCOPE) -> list[Any]:
    return (await store.messages.list(scope, conversation_id, limit=1000)).items
