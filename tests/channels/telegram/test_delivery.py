"""Delivery under pressure: long replies split, 429 floods honoured per chat, HTML refused."""

from __future__ import annotations

import dataclasses
import re

import pytest

from config.settings import Settings
from store import Scope
from tests.channels.telegram.conftest import ALICE, BOB, running
from tests.channels.telegram.helpers import stored_messages
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_text
from tests.fakes.telegram_server import FakeBotAPI

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def fast(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings, telegram=dataclasses.replace(settings.telegram, edit_interval_s=0.05)
    )


def words(text: str) -> list[str]:
    return text.split()


def long_reply() -> str:
    paragraphs = []
    for p in range(12):
        sentences = [f"Paragraph {p} sentence {s} says something mildly useful & <safe>." for s in range(14)]
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


async def test_a_long_reply_is_split_at_boundaries(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    reply = long_reply()
    assert len(reply) > 2 * 4096
    llm.enqueue(reply_text(reply, chunks=30, chunk_delay=0.01))
    async with running(fast(settings)) as (channel, agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "a long one please"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=20)
        parts = tg.messages_in(ALICE)
        assert len(parts) >= 3
        assert all(len(p) <= 4096 for p in parts)
        assert words(" ".join(parts)) == words(reply)
        # cut at paragraph ends, and the escaped "&" and "<safe>" arrived intact
        assert all(p.endswith("<safe>.") for p in parts)
        stored = await stored_messages(agent.store, Scope("default", f"tg:{ALICE}"))
        assert stored[-1].content == reply


async def test_a_split_code_block_is_reopened(settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI) -> None:
    code = "\n".join(f"print('line {i}')  # x < y && y > z" for i in range(300))
    llm.enqueue(reply_text(f"The code:\n\n```python\n{code}\n```\n\nThat is all.", chunks=5))
    async with running(fast(settings)) as (channel, _agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "code please"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=20)
        msgs = tg.bot_messages(ALICE)
        assert len(msgs) >= 2
        # every part was accepted as HTML, each code part in its own <pre> block
        assert all(m.parse_mode == "HTML" for m in msgs)
        assert msgs[1].raw.startswith('<pre><code class="language-python">')
        shown = "\n".join(m.text for m in msgs)
        assert [line for line in shown.split("\n") if line.startswith("print(")] == code.split("\n")


async def test_a_flood_of_429s_delays_one_chat_only_and_the_final_text_arrives(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    reply = "Slowly streamed reply number one. " * 8
    llm.enqueue(reply_text(reply, chunks=16, chunk_delay=0.05))
    tg.inject_error("sendMessage", error_code=429, retry_after=2, times=2, chat_id=ALICE)
    tg.inject_error("editMessageText", error_code=429, retry_after=1, times=5, chat_id=ALICE)
    async with running(fast(settings)) as (channel, _agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "alice asks"))
        await tg.wait_for(lambda: tg.errors_sent["sendMessage"] >= 1, timeout=10)
        tg.push_update(tg.text_update(BOB, BOB, "bob asks"))
        # Bob is answered while Alice's chat still waits out its retry_after (2 s twice)
        await tg.wait_for(lambda: tg.messages_in(BOB) == ["echo: bob asks"], timeout=10)
        assert tg.messages_in(ALICE) == []
        await tg.wait_for(lambda: channel.stats["answered"] == 2, timeout=30)
        assert tg.messages_in(ALICE) == [reply.strip()]
        assert tg.errors_sent["sendMessage"] == 2


async def test_html_refused_by_telegram_falls_back_to_plain_text(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    llm.enqueue(reply_text("A **bold** claim with `code`.", chunks=1))
    tg.inject_error(
        "sendMessage", error_code=400, description="Bad Request: can't parse entities: nope", times=1
    )
    async with running(settings) as (channel, _agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "format it"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        [msg] = tg.bot_messages(ALICE)
        assert msg.parse_mode is None and msg.text == "A **bold** claim with `code`."
        calls = tg.calls_of("sendMessage")
        assert [c.get("parse_mode") for c in calls] == ["HTML", None]
        assert re.search(r"<b>bold</b>", calls[0]["text"])


async def test_a_streamed_message_deleted_by_the_user_is_sent_again(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    llm.enqueue(reply_text("**Bold** start, then the rest of the answer.", chunks=2, chunk_delay=0.5))
    async with running(settings) as (channel, _agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "go"))
        [first] = await tg.wait_for(lambda: tg.bot_messages(ALICE), timeout=10)
        tg.delete_bot_message(ALICE, first.message_id)
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        assert tg.messages_in(ALICE) == ["Bold start, then the rest of the answer."]
        assert channel.stats["failed"] == 0
