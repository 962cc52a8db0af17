"""Tool output made storable: unstorable characters replaced, size capped, repairs counted."""

from __future__ import annotations

from typing import Any

import pytest

from agent.providers.base import ToolCall
from agent.tools.base import Tool, ToolCaller, ToolResult
from agent.tools.registry import ToolRegistry
from agent.tools.storable import ResultCounts, storable_result, storable_text
from store import Message

pytestmark = pytest.mark.anyio

JUNK = "a\x00b\x01c\x1fd\ud800e\udfff f\tg\nh\ri \x7f é 🙂"


def test_unstorable_characters_are_replaced_and_text_kept() -> None:
    text, replaced = storable_text(JUNK)
    assert text == "a\ufffdb\ufffdc\ufffdd\ufffde\ufffd f\tg\nh\ri \x7f é 🙂"
    assert replaced == 5
    text.encode("utf-8")  # a lone surrogate would make this raise
    assert storable_text("plain text") == ("plain text", 0)


def test_repairs_are_counted_per_tool_and_a_clean_result_is_untouched() -> None:
    counts = ResultCounts()
    clean = ToolResult("fine")
    assert storable_result("t", clean, 100, counts) is clean
    out = storable_result("t", ToolResult("\x00" + "x" * 500, ok=False), 100, counts)
    assert not out.ok and out.content.startswith("\ufffdx") and len(out.content) <= 100
    assert dict(counts.sanitised) == {"t": 1} and dict(counts.truncated) == {"t": 1}


class Junk(Tool):
    name = "junk"
    description = "Answers text no store takes as is."
    parameters: dict[str, Any] = {"type": "object", "properties": {}}

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        return ToolResult(JUNK)


async def test_a_junk_result_is_stored_and_audited_through_the_real_store(ctx: ToolCaller) -> None:
    registry = ToolRegistry([Junk()])
    result = await registry.execute(ToolCall("c1", "junk", "{}"), ctx, timeout_s=5, max_result_chars=1000)
    assert result.ok and "\x00" not in result.content and "\ud800" not in result.content
    stored = await ctx.store.messages.append(
        ctx.scope,
        Message(
            conversation_id=ctx.conversation_id,
            role="tool",
            content=result.content,
            channel="cli",
            tool_call_id="c1",
            name="junk",
        ),
    )
    assert (await ctx.store.messages.history(ctx.scope, ctx.conversation_id))[-1].content == stored.content
    audit = (await ctx.store.records.list_audit(ctx.scope)).items
    assert [(a.tool, a.ok, a.result_summary) for a in audit] == [("junk", True, result.content)]
    assert dict(registry.result_counts.sanitised) == {"junk": 1}
