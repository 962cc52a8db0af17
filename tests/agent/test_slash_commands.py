"""Every slash command, through ``Agent.handle``, against the real store."""

from __future__ import annotations

import pytest

from agent.core import Agent
from agent.events import CommandOutput
from store import Scope
from tests.agent.conftest import SCOPE, all_messages, turn
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.anyio

BOB = Scope("default", "bob")


async def command(agent: Agent, text: str, **kw: object) -> CommandOutput:
    events = await turn(agent, text, **kw)
    assert len(events) == 1 and isinstance(events[0], CommandOutput), events
    return events[0]


async def test_new_list_switch_rename(agent: Agent, fake: FakeOpenAI) -> None:
    first = (await turn(agent, "hello first"))[-1].conversation_id  # type: ignore[union-attr]
    new = await command(agent, "/new Trip planning")
    assert new.ok and new.conversation_id != first and new.data["conversation"]["title"] == "Trip planning"
    assert (await agent.conversations.active(SCOPE, channel="cli")).sid == new.conversation_id  # type: ignore[union-attr]

    listed = await command(agent, "/list")
    rows = listed.data["conversations"]
    assert {r["id"] for r in rows} == {first, new.conversation_id}
    assert [r["id"] for r in rows if r["active"]] == [new.conversation_id]
    assert f"* {new.conversation_id}" in listed.text

    switched = await command(agent, f"/switch {first}")
    assert switched.ok and switched.conversation_id == first
    await turn(agent, "back again")
    msgs = await all_messages(agent.store, first)
    assert [m.content for m in msgs if m.role == "user"] == ["hello first", "back again"]

    renamed = await command(agent, "/rename  Greetings ")
    assert renamed.ok and (await agent.store.conversations.get(SCOPE, first)).title == "Greetings"
    assert not (await command(agent, "/rename")).ok
    assert not (await command(agent, "/rename bad\x07title")).ok
    assert (await agent.store.conversations.get(SCOPE, first)).title == "Greetings"


async def test_switch_refuses_foreign_and_bad_ids_and_changes_nothing(agent: Agent) -> None:
    mine = await agent.conversations.new(SCOPE, channel="cli")
    bobs = await agent.conversations.new(BOB, channel="cli")
    for arg in (bobs.sid, "zzzz9", "../etc", ""):
        out = await command(agent, f"/switch {arg}".strip())
        assert not out.ok
        assert bobs.sid not in out.text or arg == bobs.sid  # a foreign id reads exactly like a missing one
    assert (await command(agent, f"/switch {bobs.sid}")).text == "No conversation with that id."
    assert (await command(agent, "/switch zzzz9")).text == "No conversation with that id."
    assert (await agent.conversations.active(SCOPE, channel="cli")).sid == mine.sid  # type: ignore[union-attr]


async def test_delete_is_a_hard_delete_and_leaves_no_active(agent: Agent, fake: FakeOpenAI) -> None:
    cid = (await turn(agent, "secret stuff"))[-1].conversation_id  # type: ignore[union-attr]
    out = await command(agent, "/delete")
    assert out.ok and out.data == {"deleted": cid}
    assert await agent.conversations.active(SCOPE, channel="cli", create=False) is None
    assert (await agent.store.conversations.list(SCOPE)).items == []
    assert not (await command(agent, "/delete")).ok
    nxt = (await turn(agent, "fresh start"))[-1].conversation_id  # type: ignore[union-attr]
    assert nxt != cid


async def test_context_command(agent: Agent) -> None:
    show = await command(agent, "/context")
    assert show.ok and show.data == {"context": "default", "changed": False} and "default" in show.text
    switch = await command(agent, "/context work_2")
    assert switch.ok and switch.data == {"context": "work_2", "changed": True}
    bad = await command(agent, "/context Bad Name!")
    assert not bad.ok and bad.data == {} and "invalid context name" in bad.text


async def test_memory_and_forget(agent: Agent) -> None:
    assert (await command(agent, "/memory")).data == {"memories": []}
    mem, _ = await agent.store.memories.add(SCOPE, "Prefers tea")
    bob_mem, _ = await agent.store.memories.add(BOB, "Bob's secret")
    listed = await command(agent, "/memory")
    assert [m["id"] for m in listed.data["memories"]] == [
        mem.sid
    ] and f"{mem.sid}  Prefers tea" in listed.text
    assert "Bob" not in listed.text
    assert not (await command(agent, f"/forget {bob_mem.sid}")).ok
    assert not (await command(agent, "/forget")).ok
    assert (await agent.store.memories.get(BOB, bob_mem.sid)).content == "Bob's secret"
    out = await command(agent, f"/forget {mem.sid}")
    assert out.ok and out.data == {"forgotten": mem.sid}
    assert (await command(agent, "/memory")).data == {"memories": []}


async def test_help_and_unknown_commands_never_reach_the_model(agent: Agent, fake: FakeOpenAI) -> None:
    helped = await command(agent, "/help")
    assert helped.ok and "/switch ID" in helped.text and "stop" in helped.data["commands"]
    unknown = await command(agent, "/frobnicate now")
    assert (
        not unknown.ok and unknown.text.startswith("Unknown command /frobnicate.") and "/help" in unknown.text
    )
    # Telegram's "/cmd@botname" form is the same command
    assert (await command(agent, "/help@hero_bot")).ok
    assert fake.requests == []
    # a message that merely starts with a slash is a message
    events = await turn(agent, "/usr/bin is where it lives")
    assert not isinstance(events[0], CommandOutput)


async def test_clear_without_conversation(agent: Agent) -> None:
    out = await command(agent, "/clear")
    assert out.ok and out.text == "There is no conversation to clear yet."
