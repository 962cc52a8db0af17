"""Every shared slash command through Telegram, registered with setMyCommands; /stop mid-reply."""

from __future__ import annotations

import dataclasses

import pytest

from agent.slash_commands import COMMANDS
from channels.telegram import TelegramChannel
from config.settings import Settings
from store import Scope
from tests.channels.telegram.conftest import ALICE, running
from tests.channels.telegram.helpers import stored_messages
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_text
from tests.fakes.telegram_server import FakeBotAPI

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
HOME = Scope("default", f"tg:{ALICE}")


async def say(tg: FakeBotAPI, channel: TelegramChannel, text: str) -> str:
    """Send ``text`` from Alice and return the bot's answer."""
    before = channel.stats["answered"]
    tg.push_update(tg.text_update(ALICE, ALICE, text))
    await tg.wait_for(lambda: channel.stats["answered"] > before, timeout=10)
    return tg.messages_in(ALICE)[-1]


async def test_every_shared_command(settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI) -> None:
    async with running(settings) as (channel, agent):
        # /start is Telegram's own first message (its START button), not a menu entry
        assert {c["command"] for c in tg.commands} == set(COMMANDS) - {"start"}
        assert {"status", "model"} <= {c["command"] for c in tg.commands}
        assert all(c["description"] for c in tg.commands)
        store = agent.store

        assert await say(tg, channel, "first conversation") == "echo: first conversation"
        [first] = (await store.conversations.list(HOME)).items
        assert "Started a new conversation" in await say(tg, channel, "/new")
        assert len((await store.conversations.list(HOME)).items) == 2
        assert await say(tg, channel, "in the second") == "echo: in the second"
        assert "Renamed to 'Second'" in await say(tg, channel, "/rename Second")
        listing = await say(tg, channel, "/list")
        assert first.sid in listing and "Second" in listing

        assert "Switched to" in await say(tg, channel, f"/switch {first.sid}")
        await say(tg, channel, "back in the first")
        assert [m.content for m in (await store.messages.history(HOME, first.sid))][
            -1
        ] == "echo: back in the first"
        assert "No conversation" in await say(tg, channel, "/switch zz99")

        assert "Cleared" in await say(tg, channel, "/clear")
        assert await store.messages.history(HOME, first.sid) == []
        assert "compact" in (await say(tg, channel, "/compact")).lower()

        assert "do not remember anything" in await say(tg, channel, "/memory")
        memory, _ = await store.memories.add(HOME, "Alice likes green tea")
        assert "green tea" in await say(tg, channel, "/memory")
        assert f"Forgot memory {memory.sid}" in await say(tg, channel, f"/forget {memory.sid}")
        assert (await store.memories.list(HOME)).items == []

        assert "Deleted conversation" in await say(tg, channel, "/delete")
        assert first.sid not in [c.sid for c in (await store.conversations.list(HOME)).items]

        assert "Current context: default" in await say(tg, channel, "/context")
        assert "Switched to context work" in await say(tg, channel, "/context work")
        await say(tg, channel, "now at work")
        work = await stored_messages(store, Scope("work", f"tg:{ALICE}"))
        assert [m.content for m in work] == ["now at work", "echo: now at work"]
        assert "invalid context" in await say(tg, channel, "/context Not Valid!")
        assert "Current context: work" in await say(tg, channel, "/context")

        help_text = await say(tg, channel, "/help")
        assert all(f"/{name}" in help_text for name in COMMANDS if name != "start")
        unknown = await say(tg, channel, "/frobnicate")
        assert "Unknown command /frobnicate" in unknown and "/help" in unknown
        assert await say(tg, channel, "/stop") == "Nothing is running."
        # commands never reach the model: only the four plain messages did
        assert llm.request_count == 4


async def test_stop_cancels_the_running_reply(settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI) -> None:
    settings = dataclasses.replace(
        settings, telegram=dataclasses.replace(settings.telegram, edit_interval_s=0.1)
    )
    llm.enqueue(reply_text("word " * 200, chunks=200, chunk_delay=0.05))
    async with running(settings) as (channel, agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "tell me a long story"))
        await tg.wait_for(lambda: tg.messages_in(ALICE), timeout=10)  # streaming has begun
        tg.push_update(tg.text_update(ALICE, ALICE, "/stop"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        [text] = tg.messages_in(ALICE)
        # some of the reply was shown, not all of it, and the stop is marked
        partial = text.removesuffix("⏹ Stopped.")
        assert partial != text and partial.startswith("word")
        assert partial.split() == ["word"] * len(partial.split()) and len(partial.split()) < 200
        stored = await stored_messages(agent.store, HOME)
        assert [m.role for m in stored] == ["user", "assistant"]
        assert stored[1].status == "interrupted"
        # the chat is free again
        tg.push_update(tg.text_update(ALICE, ALICE, "still there?"))
        await tg.wait_for(lambda: tg.messages_in(ALICE)[-1:] == ["echo: still there?"], timeout=10)


async def test_start_status_and_model(settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI) -> None:
    llm_settings = dataclasses.replace(settings.llm, fallback_models=("fake-big",))
    settings = dataclasses.replace(settings, llm=llm_settings)
    async with running(settings) as (channel, agent):
        greeting = await say(tg, channel, "/start")
        assert greeting.startswith("Hello!") and "Unknown command" not in greeting
        status = await say(tg, channel, "/status")
        assert "Model: fake-model" in status and "Provider: openai at 127.0.0.1:" in status
        assert "Context: default" in status and "Store: embedded" in status
        assert "Conversation: none yet" in status
        listing = await say(tg, channel, "/model")
        assert "fake-model (in use)" in listing and "fake-big" in listing
        assert "Unknown model 'nope'" in await say(tg, channel, "/model nope")
        assert "now uses fake-big" in await say(tg, channel, "/model fake-big")
        await say(tg, channel, "which model?")
        assert llm.requests[-1]["model"] == "fake-big"
        [conv] = (await agent.store.conversations.list(HOME)).items
        assert conv.model == "fake-big"
        assert "Model: fake-big" in await say(tg, channel, "/status")
    # a restart keeps the conversation's model: it is stored with the conversation
    async with running(settings) as (channel, agent):
        await say(tg, channel, "still the big one?")
        assert llm.requests[-1]["model"] == "fake-big"
        assert "now uses fake-model" in await say(tg, channel, "/model fake-model")
        await say(tg, channel, "back to the default")
        assert llm.requests[-1]["model"] == "fake-model"
