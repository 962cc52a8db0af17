"""Private chats: streamed answers, what is stored, identity links, unsupported media."""

from __future__ import annotations

import pytest

from config.settings import Settings
from store import Scope
from tests.channels.telegram.conftest import ALICE, BOB, running
from tests.channels.telegram.helpers import stored_messages
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_text, reply_tool_calls
from tests.fakes.telegram_server import FakeBotAPI

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REPLY = "Here is **the answer**, streamed in many small pieces so that several edits happen. Done."


async def test_private_chat_is_streamed_by_edits_and_stored(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    llm.enqueue(reply_text(REPLY, chunks=12, chunk_delay=0.1))
    async with running(settings) as (channel, agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "explain please"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=15)
        [msg] = tg.bot_messages(ALICE)
        assert msg.text == REPLY.replace("**", "")
        assert msg.parse_mode == "HTML" and "<b>the answer</b>" in msg.raw
        # streamed: plain-text prefixes first, then the formatted final edit; never an unchanged edit
        assert msg.edits >= 2
        for earlier in msg.history[:-1]:
            assert REPLY.startswith(earlier)
        assert len(set(msg.history)) == len(msg.history)
        assert tg.counts["sendChatAction"] >= 1
        assert {c["action"] for c in tg.calls_of("sendChatAction")} == {"typing"}

        scope = Scope("default", f"tg:{ALICE}")
        stored = await stored_messages(agent.store, scope)
        assert [(m.role, m.channel) for m in stored] == [("user", "telegram"), ("assistant", "telegram")]
        assert stored[0].content == "explain please" and stored[1].content == REPLY
        assert stored[0].sender == ""


async def test_quick_answer_is_one_message_without_edits(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    async with running(settings) as (channel, _agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "ping"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        assert tg.messages_in(ALICE) == ["echo: ping"]
        assert tg.counts["editMessageText"] == 0


async def test_messages_of_one_chat_are_answered_in_order(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    async with running(settings) as (channel, _agent):
        for i in range(4):
            tg.push_update(tg.text_update(ALICE, ALICE, f"message {i}"))
        await tg.wait_for(lambda: channel.stats["answered"] == 4, timeout=15)
        assert tg.messages_in(ALICE) == [f"echo: message {i}" for i in range(4)]


async def test_linked_user_gets_the_canonical_identity(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    async with running(settings) as (channel, agent):
        tg.push_update(tg.text_update(BOB, BOB, "hi, I am bob"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        assert tg.messages_in(BOB) == ["echo: hi, I am bob"]
        stored = await stored_messages(agent.store, Scope("default", "bob"))
        assert [m.content for m in stored] == ["hi, I am bob", "echo: hi, I am bob"]
        assert await stored_messages(agent.store, Scope("default", f"tg:{BOB}")) == []


@pytest.mark.parametrize("kind", ["document", "sticker"])
async def test_media_gets_a_clear_not_supported_reply(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI, kind: str
) -> None:
    async with running(settings) as (channel, agent):
        tg.push_update(tg.media_update(ALICE, ALICE, kind))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        [text] = tg.messages_in(ALICE)
        assert "not this kind of message" in text
        assert llm.request_count == 0
        assert await stored_messages(agent.store, Scope("default", f"tg:{ALICE}")) == []


async def test_tool_use_shows_a_hint_then_the_answer(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    llm.enqueue(
        reply_tool_calls([("call_1", "current_datetime", "{}")]),
        reply_text("It is a fine day.", chunks=2, delay=1.0),
    )
    async with running(settings) as (channel, agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "what time is it?"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=15)
        [msg] = tg.bot_messages(ALICE)
        assert msg.history[0] == "🔧 current_datetime…"
        assert msg.text == "It is a fine day."
        audit = await agent.store.records.list_audit(Scope("default", f"tg:{ALICE}"))
        assert [a.tool for a in audit.items] == ["current_datetime"]
