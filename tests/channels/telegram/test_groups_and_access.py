"""Groups (answer only when addressed; the group is its own scope) and the allowlist."""

from __future__ import annotations

import pytest

from config.settings import Settings
from store import Scope
from tests.channels.telegram.conftest import ALICE, MALLORY, running
from tests.channels.telegram.helpers import stored_messages
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.telegram_server import BOT_USERNAME, FakeBotAPI

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

GROUP = -100500


async def test_group_answers_mentions_replies_and_commands_only(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    async with running(settings) as (channel, agent):
        tg.push_update(tg.group_update(GROUP, ALICE, "just chatting among humans"))
        tg.push_update(tg.group_update(GROUP, ALICE, f"@{BOT_USERNAME} what is two plus two?"))
        tg.push_update(tg.group_update(GROUP, ALICE, "and you, @someone_else?"))
        tg.push_update(tg.group_update(GROUP, ALICE, "a follow-up", reply_to_bot=1))
        tg.push_update(tg.group_update(GROUP, ALICE, "/help@other_bot"))
        tg.push_update(tg.group_update(GROUP, ALICE, f"/list@{BOT_USERNAME}"))
        await tg.wait_for(lambda: channel.stats["answered"] == 3, timeout=15)
        # everything is processed in order, so once the last was answered the ignored ones were skipped
        texts = tg.messages_in(GROUP)
        # (the agent shows the model who spoke in a group: "tg:<id>: text")
        assert texts[:2] == [f"echo: tg:{ALICE}: what is two plus two?", f"echo: tg:{ALICE}: a follow-up"]
        assert "0001" in texts[2]  # /list shows the group's conversation
        assert len(texts) == 3
        assert llm.request_count == 2

        stored = await stored_messages(agent.store, Scope("default", f"tg-group:{GROUP}"))
        users = [m for m in stored if m.role == "user"]
        assert [m.content for m in users] == ["what is two plus two?", "a follow-up"]
        assert {m.sender for m in users} == {f"tg:{ALICE}"}
        assert all(m.channel == "telegram" for m in stored)
        convs = await agent.store.conversations.list(Scope("default", f"tg-group:{GROUP}"))
        assert [c.is_group for c in convs.items] == [True]
        # the group is not Alice's private scope
        assert await stored_messages(agent.store, Scope("default", f"tg:{ALICE}")) == []
        # group answers reply to the message that addressed the bot
        first = tg.calls_of("sendMessage")[0]
        assert first["reply_parameters"]["message_id"] == 2


async def test_a_stranger_is_refused_with_a_pairing_code_and_nothing_is_stored(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    async with running(settings) as (channel, agent):
        for text in ("hello?", "anyone there?", "/help"):
            tg.push_update(tg.text_update(MALLORY, MALLORY, text))
        # then a message from an allowed user proves the stranger's updates were all processed
        tg.push_update(tg.text_update(ALICE, ALICE, "hi"))
        await tg.wait_for(lambda: tg.messages_in(ALICE) == ["echo: hi"], timeout=10)
        await tg.wait_for(lambda: channel.stats["answered"] == 4, timeout=10)
        refusals = tg.messages_in(MALLORY)
        # each attempt (up to pairing_attempts_per_hour) shows the one pending code and the id
        assert len(refusals) == 3 and len(set(refusals)) == 1
        assert f"Your Telegram id: {MALLORY}" in refusals[0] and "Pairing code:" in refusals[0]
        assert channel.stats["refused"] == 3
        assert llm.request_count == 1
        stats = await agent.store.records.stats(Scope("default", f"tg:{MALLORY}"))
        assert (stats.conversations, stats.messages) == (0, 0)


async def test_a_stranger_in_a_group_is_refused_once_when_addressing_the_bot(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    async with running(settings) as (channel, agent):
        tg.push_update(tg.group_update(GROUP, MALLORY, "not for the bot"))
        tg.push_update(tg.group_update(GROUP, MALLORY, f"@{BOT_USERNAME} hi"))
        tg.push_update(tg.group_update(GROUP, MALLORY, f"@{BOT_USERNAME} hi again"))
        tg.push_update(tg.group_update(GROUP, ALICE, f"@{BOT_USERNAME} hello"))
        await tg.wait_for(lambda: channel.stats["answered"] == 2, timeout=10)
        texts = tg.messages_in(GROUP)
        assert len(texts) == 2 and "do not know you" in texts[0] and texts[1] == f"echo: tg:{ALICE}: hello"
        stored = await stored_messages(agent.store, Scope("default", f"tg-group:{GROUP}"))
        assert {m.sender for m in stored if m.role == "user"} == {f"tg:{ALICE}"}
