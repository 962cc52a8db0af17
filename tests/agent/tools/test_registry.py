"""ToolRegistry.execute: every failure mode is an error result the model can act on, and audited."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from agent.providers.base import ToolCall, ToolSpec
from agent.tools.base import Tool, ToolCaller, ToolError, ToolResult
from agent.tools.registry import ToolRegistry
from agent.tools.storable import cap_result
from store import AuditEntry, InvalidInput
from tests.agent.tools.conftest import SCOPE

pytestmark = pytest.mark.anyio


class Echo(Tool):
    name = "echo"
    description = "Repeat the text."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "maxLength": 20},
            "times": {"type": "integer", "minimum": 1, "maximum": 3},
            "mode": {"type": "string", "enum": ["plain", "loud"]},
            "api_key": {"type": "string"},
        },
        "required": ["text"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        text = args["text"] * args.get("times", 1)
        return ToolResult(text.upper() if args.get("mode") == "loud" else text)


class Misbehaving(Tool):
    description = "Fails in a chosen way."
    parameters: dict[str, Any] = {"type": "object", "properties": {}}

    def __init__(self, name: str, how: str) -> None:
        self.name = name
        self.how = how
        self.started = anyio.Event()

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        self.started.set()
        if self.how == "crash":
            raise RuntimeError("wheels came off")
        if self.how == "tool-error":
            raise ToolError("the printer is out of paper")
        if self.how == "store-error":
            raise InvalidInput("content too long")
        if self.how == "own-timeout":
            raise TimeoutError("upstream took too long")
        if self.how == "huge":
            return ToolResult("y" * 10_000)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry(
        [
            Echo(),
            Misbehaving("crash", "crash"),
            Misbehaving("tool_error", "tool-error"),
            Misbehaving("store_error", "store-error"),
            Misbehaving("huge", "huge"),
            Misbehaving("hang", "hang"),
            Misbehaving("own_timeout", "own-timeout"),
        ]
    )


async def run(registry: ToolRegistry, ctx: ToolCaller, name: str, arguments: str, **kw: Any) -> ToolResult:
    opts = {"timeout_s": 5.0, "max_result_chars": 1000} | kw
    with anyio.fail_after(10):
        return await registry.execute(ToolCall("call-1", name, arguments), ctx, **opts)


async def audit(ctx: ToolCaller) -> list[AuditEntry]:
    return list(reversed((await ctx.store.records.list_audit(SCOPE)).items))


def test_specs_and_lookup(registry: ToolRegistry) -> None:
    specs = registry.specs()
    assert specs[0] == ToolSpec("echo", "Repeat the text.", Echo.parameters)
    assert [s.name for s in specs] == [
        "echo",
        "crash",
        "tool_error",
        "store_error",
        "huge",
        "hang",
        "own_timeout",
    ]
    assert registry.has("echo") and not registry.has("nope")
    # the same specs every turn (they carry the providers' memos) until a tool is registered
    assert registry.specs() is specs
    registry.register(Misbehaving("later", "crash"))
    assert registry.specs() is not specs and registry.specs()[-1].name == "later"


@pytest.mark.parametrize("name", ["", "has space", "dot.ted", "x" * 65, "ünï"])
def test_bad_tool_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid tool name"):
        ToolRegistry([Misbehaving(name, "crash")])


def test_duplicates_and_invalid_schemas_are_rejected(registry: ToolRegistry) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Echo())
    bad = Misbehaving("bad_schema", "crash")
    bad.parameters = {"type": "object", "properties": {"x": {"type": "nonsense"}}}
    with pytest.raises(ValueError, match="invalid parameters schema"):
        registry.register(bad)


async def test_success_is_returned_and_audited(registry: ToolRegistry, ctx: ToolCaller) -> None:
    result = await run(registry, ctx, "echo", '{"text": "hi", "times": 2, "mode": "loud"}')
    assert result == ToolResult("HIHI", ok=True)
    [entry] = await audit(ctx)
    assert (entry.tool, entry.ok, entry.error, entry.result_summary) == ("echo", True, "", "HIHI")
    assert json.loads(entry.arguments) == {"text": "hi", "times": 2, "mode": "loud"}
    assert (entry.conversation_id, entry.channel) == (ctx.conversation_id, "cli")
    assert entry.duration_ms >= 0


async def test_empty_arguments_mean_an_empty_object(registry: ToolRegistry, ctx: ToolCaller) -> None:
    assert (await run(registry, ctx, "huge", "")).ok
    assert (await run(registry, ctx, "huge", "null")).ok


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        (
            "nope",
            "{}",
            "error: unknown tool 'nope'. Available tools: crash, echo, hang, huge, own_timeout, store_error, "
            "tool_error",
        ),
        ("echo", '{"text": "hi"', "error: invalid arguments for echo: not valid JSON"),
        ("echo", '["hi"]', "error: invalid arguments for echo: expected a JSON object, got list"),
        ("echo", "{}", "error: invalid arguments for echo: 'text' is a required property"),
        ("echo", '{"text": 5}', "error: invalid arguments for echo: 5 is not of type 'string' (at 'text')"),
        (
            "echo",
            '{"text": "a", "times": 9}',
            "error: invalid arguments for echo: 9 is greater than the maximum of 3",
        ),
        (
            "echo",
            '{"text": "a", "mode": "x"}',
            "error: invalid arguments for echo: 'x' is not one of ['plain', 'loud']",
        ),
        (
            "echo",
            '{"text": "a", "colour": 1}',
            "error: invalid arguments for echo: Additional properties are not allowed",
        ),
        ("echo", json.dumps({"text": "a" * 21}), "error: invalid arguments for echo: 'aaaa"),
        ("crash", "{}", "error: crash failed: RuntimeError: wheels came off"),
        ("tool_error", "{}", "error: the printer is out of paper"),
        ("store_error", "{}", "error: store_error failed: content too long"),
        ("own_timeout", "{}", "error: own_timeout failed: timed out (upstream took too long)"),
    ],
)
async def test_failures_become_error_results(
    registry: ToolRegistry, ctx: ToolCaller, name: str, arguments: str, expected: str
) -> None:
    result = await run(registry, ctx, name, arguments)
    assert not result.ok
    assert result.content.startswith(expected), result.content
    [entry] = await audit(ctx)
    assert (entry.tool, entry.ok) == (name, False)
    assert entry.error.startswith(expected[:60])


async def test_timeout_becomes_an_error_result(registry: ToolRegistry, ctx: ToolCaller) -> None:
    result = await run(registry, ctx, "hang", "{}", timeout_s=0.05)
    assert result == ToolResult("error: hang timed out after 0.05 s", ok=False)
    assert [(e.tool, e.ok) for e in await audit(ctx)] == [("hang", False)]


async def test_results_are_capped_with_a_visible_note(registry: ToolRegistry, ctx: ToolCaller) -> None:
    result = await run(registry, ctx, "huge", "{}", max_result_chars=500)
    assert result.ok and len(result.content) <= 500
    assert result.content.endswith("characters]") and "of 10000 characters" in result.content
    [entry] = await audit(ctx)
    assert len(entry.result_summary) <= 500


async def test_schemas_of_older_drafts_are_honoured(ctx: ToolCaller) -> None:
    tool = Misbehaving("draft7", "huge")
    # "dependencies" exists only up to draft-07 (2020-12 ignores it): this checks the declared draft is used
    tool.parameters = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "dependencies": {"a": ["b"]},
    }
    registry = ToolRegistry([tool])
    bad = await run(registry, ctx, "draft7", '{"a": "x"}')
    assert bad.content == "error: invalid arguments for draft7: 'b' is a dependency of 'a'"
    assert (await run(registry, ctx, "draft7", '{"a": "x", "b": "y"}')).ok


def test_cap_leaves_short_results_alone() -> None:
    short = ToolResult("fine")
    assert cap_result(short, 10) is short


async def test_cancellation_propagates_and_is_audited(registry: ToolRegistry, ctx: ToolCaller) -> None:
    hang = registry.get("hang")
    assert isinstance(hang, Misbehaving)
    outcome: list[str] = []

    async def call() -> None:
        try:
            await registry.execute(ToolCall("c", "hang", "{}"), ctx, timeout_s=30, max_result_chars=100)
            outcome.append("returned")
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await hang.started.wait()
            tg.cancel_scope.cancel()
    assert outcome == ["cancelled"]
    [entry] = await audit(ctx)
    assert (entry.tool, entry.ok, entry.error) == ("hang", False, "cancelled")


async def test_secret_looking_arguments_never_reach_audit_or_logs(
    registry: ToolRegistry, ctx: ToolCaller
) -> None:
    with capture_logs() as logs:
        await run(registry, ctx, "echo", '{"text": "hi", "api_key": "sk-very-secret"}')
    [entry] = await audit(ctx)
    assert "sk-very-secret" not in entry.arguments
    assert json.loads(entry.arguments)["api_key"] == "[redacted]"
    [event] = [e for e in logs if e["event"] == "tool.executed"]
    assert event["tool"] == "echo" and event["ok"] is True and "duration_ms" in event
    assert "sk-very-secret" not in repr(logs)


async def test_long_arguments_are_capped_in_the_audit(registry: ToolRegistry, ctx: ToolCaller) -> None:
    await run(registry, ctx, "nope", json.dumps({"blob": "z" * 10_000}))
    [entry] = await audit(ctx)
    assert len(entry.arguments) <= 2000


async def test_an_unwritable_audit_does_not_fail_the_call(registry: ToolRegistry, ctx: ToolCaller) -> None:
    await ctx.store.aclose()
    with capture_logs() as logs:
        result = await run(registry, ctx, "echo", '{"text": "still works"}')
    assert result == ToolResult("still works")
    assert any(e["event"] == "tool.audit_failed" for e in logs)
