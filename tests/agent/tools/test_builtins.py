"""The built-in tools against a real embedded store."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from agent.providers.base import ToolCall
from agent.tools.base import ToolCaller, ToolError
from agent.tools.builtin.clock import CurrentDateTimeTool
from agent.tools.builtin.memory import MemoryForgetTool, MemorySaveTool, MemorySearchTool
from agent.tools.builtin.search import SearchConversationsTool, snippet
from agent.tools.factory import builtin_tools, open_tools
from agent.tools.registry import ToolRegistry
from config.settings import Settings, ToolsSettings
from store import Message, Scope
from tests.agent.tools.conftest import SCOPE

pytestmark = pytest.mark.anyio

OTHER_USER = Scope("work", "bob")
OTHER_CONTEXT = Scope("home", "alice")
GROUP = Scope("work", "tg-group-42")


async def test_memory_save_records_the_source_and_spots_duplicates(ctx: ToolCaller) -> None:
    save = MemorySaveTool()
    first = await save.run({"content": "Prefers tea over coffee", "kind": "preference"}, ctx)
    assert first.ok and first.content.startswith("saved: [")
    again = await save.run({"content": "  prefers TEA over   coffee "}, ctx)
    assert again.content.startswith("already remembered (duplicate")
    [mem] = (await ctx.store.memories.list(SCOPE)).items
    assert (mem.content, mem.kind) == ("Prefers tea over coffee", "preference")
    assert (mem.source_conversation_id, mem.source_channel) == (ctx.conversation_id, "cli")


async def test_memory_search_finds_by_words_and_lists_recent(ctx: ToolCaller) -> None:
    for fact in ("Lives in Ghent", "Has a dog named Pixel", "Works on compilers"):
        await MemorySaveTool().run({"content": fact}, ctx)
    await ctx.store.memories.add(OTHER_USER, "Bob has a dog too")
    found = await MemorySearchTool().run({"query": "dog"}, ctx)
    assert "Pixel" in found.content and "Bob" not in found.content
    recent = await MemorySearchTool().run({"query": "", "limit": 2}, ctx)
    assert recent.content.startswith("2 memories:")
    none = await MemorySearchTool().run({"query": "submarine"}, ctx)
    assert none.content == "no memories match 'submarine'"


async def test_memory_forget_deletes_only_own_memories(ctx: ToolCaller) -> None:
    mine, _ = await ctx.store.memories.add(SCOPE, "Allergic to peanuts")
    theirs, _ = await ctx.store.memories.add(OTHER_USER, "Bob's secret")
    # ids are allocated per context: skip the one equal to ``mine`` (that id IS this user's memory)
    await ctx.store.memories.add(OTHER_CONTEXT, "Alice's first note at home")
    elsewhere, _ = await ctx.store.memories.add(OTHER_CONTEXT, "Alice at home")
    assert mine.sid not in (theirs.sid, elsewhere.sid)
    forget = MemoryForgetTool()
    for sid in (theirs.sid, elsewhere.sid, "zzzz9999", "../etc", ""):
        with pytest.raises(ToolError) as info:
            await forget.run({"id": sid}, ctx)
        assert str(info.value) == f"no memory with id {sid!r}; use memory_search to find ids"
    assert (await ctx.store.memories.get(OTHER_USER, theirs.sid)).content == "Bob's secret"
    assert (await ctx.store.memories.get(OTHER_CONTEXT, elsewhere.sid)).content == "Alice at home"
    done = await forget.run({"id": f"[{mine.sid}]"}, ctx)
    assert done.content.startswith(f"forgotten: [{mine.sid}]")
    assert (await ctx.store.memories.list(SCOPE)).items == []


async def test_in_a_group_scope_memory_tools_touch_only_the_group(ctx: ToolCaller) -> None:
    personal, _ = await ctx.store.memories.add(SCOPE, "Alice's personal note about dogs")
    conv = await ctx.store.conversations.create(GROUP, channel="telegram", is_group=True)
    group_ctx = ToolCaller(ctx.store, GROUP, conv.sid, "telegram", is_group=True)
    await MemorySaveTool().run({"content": "The group walks dogs on Sundays"}, group_ctx)
    found = await MemorySearchTool().run({"query": "dogs"}, group_ctx)
    assert "Sundays" in found.content and "personal" not in found.content
    with pytest.raises(ToolError):
        await MemoryForgetTool().run({"id": personal.sid}, group_ctx)
    assert [m.content for m in (await ctx.store.memories.list(SCOPE)).items] == [personal.content]


async def test_current_datetime_in_utc_and_named_zones(ctx: ToolCaller) -> None:
    tool = CurrentDateTimeTool()
    before = datetime.now(UTC).replace(microsecond=0)
    utc = await tool.run({}, ctx)
    after = datetime.now(UTC)
    iso = re.search(r"ISO 8601: (\S+)", utc.content)
    assert iso is not None
    stamp = datetime.fromisoformat(iso.group(1))
    assert before <= stamp <= after and stamp.utcoffset() == timedelta(0)
    tokyo = await tool.run({"timezone": "Asia/Tokyo"}, ctx)
    assert "UTC+0900" in tokyo.content and "JST" in tokyo.content


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "not a zone"])
async def test_current_datetime_refuses_unknown_zones(ctx: ToolCaller, zone: str) -> None:
    with pytest.raises(ToolError, match="unknown time zone"):
        await CurrentDateTimeTool().run({"timezone": zone}, ctx)


async def test_search_conversations_stays_in_scope_and_skips_what_the_model_sees(ctx: ToolCaller) -> None:
    store = ctx.store
    old = await store.conversations.create(SCOPE, "Holiday plans", channel="telegram")
    await store.messages.append(
        SCOPE,
        Message(
            conversation_id=old.sid,
            role="user",
            content="Book the ferry to Sardinia in June",
            channel="telegram",
        ),
    )
    await store.messages.append(
        SCOPE,
        Message(
            conversation_id=old.sid,
            role="assistant",
            content="The Sardinia ferry leaves Genoa daily",
            channel="telegram",
        ),
    )
    await store.messages.append(
        SCOPE,
        Message(conversation_id=old.sid, role="tool", content="Sardinia tool output", channel="telegram"),
    )
    # the current conversation: an archived (cleared) turn stays searchable, the visible one does not
    await store.messages.append(
        SCOPE,
        Message(
            conversation_id=ctx.conversation_id,
            role="user",
            content="Sardinia beaches before clear",
            channel="cli",
        ),
    )
    await store.conversations.clear(SCOPE, ctx.conversation_id)
    await store.messages.append(
        SCOPE,
        Message(
            conversation_id=ctx.conversation_id, role="user", content="Search Sardinia please", channel="cli"
        ),
    )
    for scope in (OTHER_USER, OTHER_CONTEXT):
        other = await store.conversations.create(scope, "Not yours")
        await store.messages.append(
            scope,
            Message(conversation_id=other.sid, role="user", content="Sardinia is lovely", channel="web"),
        )

    result = await SearchConversationsTool().run({"query": "Sardinia"}, ctx)
    lines = result.content.splitlines()
    assert lines[0] == "3 matching messages:"
    body = "\n".join(lines[1:])
    assert "Book the ferry" in body and "leaves Genoa" in body and "before clear" in body
    assert "Search Sardinia please" not in body and "lovely" not in body and "tool output" not in body
    assert f'conversation {old.sid} "Holiday plans"' in body and ", telegram]" in body
    assert re.search(r"\[\d{4}-\d\d-\d\d \d\d:\d\d UTC", body)

    nothing = await SearchConversationsTool().run({"query": "zanzibar"}, ctx)
    assert nothing.content == "no earlier messages match 'zanzibar'"


def test_snippets_center_on_the_match() -> None:
    text = "lorem " * 100 + "the ferry to Sardinia " + "ipsum " * 100
    cut = snippet(text, "sardinia", width=80)
    assert "Sardinia" in cut and cut.startswith("…") and cut.endswith("…")
    assert len(cut) <= 82


async def test_switches_choose_the_builtins() -> None:
    names = [t.name for t in builtin_tools(ToolsSettings())]
    assert names == [
        "memory_save",
        "memory_search",
        "memory_forget",
        "current_datetime",
        "search_conversations",
        "http_fetch",
    ]
    off = ToolsSettings(memory=False, datetime=False, search_conversations=False, http_fetch=False)
    assert builtin_tools(off) == []
    only_fetch = ToolsSettings(memory=False, datetime=False, search_conversations=False)
    assert [t.name for t in builtin_tools(only_fetch)] == ["http_fetch"]


async def test_open_tools_gives_a_working_registry(ctx: ToolCaller) -> None:
    async with open_tools(Settings()) as registry:
        assert isinstance(registry, ToolRegistry)
        result = await registry.execute(
            ToolCall("c1", "memory_save", '{"content": "Likes jazz"}'),
            ctx,
            timeout_s=5,
            max_result_chars=1000,
        )
        assert result.ok
    assert [a.tool for a in (await ctx.store.records.list_audit(SCOPE)).items] == ["memory_save"]
