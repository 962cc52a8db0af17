"""Delivery under pressure: long replies split, 429 floods honoured per chat, HTML refused."""

from __future__ import annotations

import dataclasses
import re

import pytest

from agent.core import Agent
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


# -- refusals of the final delivery: split smaller, then plain, then a notice -------------------------

TOO_LONG = "Bad Request: message is too long"


def fallbacks(agent: Agent) -> dict[str, int]:
    """The delivery fallback counters, as /metrics shows them."""
    found = re.findall(
        r'^hero_telegram_delivery_fallbacks_total\{fallback="(\w+)"\} (\d+)$',
        "\n".join(agent.metrics.render_lines()),
        re.M,
    )
    return {kind: int(n) for kind, n in found}


def sentences(n: int) -> str:
    return " ".join(f"Sentence {i} is **bold** and fine." for i in range(n))


async def test_a_part_refused_as_too_long_is_split_smaller(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    reply = sentences(90)  # one part of about 2,600 visible characters
    llm.enqueue(reply_text(reply, chunks=1))
    tg.inject_error("sendMessage", error_code=400, description=TOO_LONG, times=1)
    async with running(settings) as (channel, agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "long-ish"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=15)
        msgs = tg.bot_messages(ALICE)
        assert len(msgs) == 2 and all(m.parse_mode == "HTML" for m in msgs)
        assert words(" ".join(m.text for m in msgs)) == words(reply.replace("**", ""))
        assert fallbacks(agent) == {"split": 1}


async def test_a_part_too_long_even_when_small_goes_out_as_plain_text(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    llm.enqueue(reply_text("A **bold** claim.", chunks=1))
    # refused at 4096, 2048, 1024 and 512: smaller than that is not worth it, plain text goes out
    tg.inject_error("sendMessage", error_code=400, description=TOO_LONG, times=4)
    async with running(settings) as (channel, agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "format it"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=15)
        [msg] = tg.bot_messages(ALICE)
        assert msg.parse_mode is None and msg.text == "A **bold** claim."
        assert fallbacks(agent) == {"split": 3, "plain": 1}


async def test_a_plain_fallback_longer_than_the_limit_is_split_by_what_telegram_counts(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    # 40 links: about 900 characters shown, 5,000 characters of Markdown source
    links = " ".join(f"[link{i}](https://example.org/{'p' * 100}/{i})" for i in range(40))
    assert len(links) > 4096
    llm.enqueue(reply_text(links, chunks=1))
    tg.inject_error(
        "sendMessage", error_code=400, description="Bad Request: can't parse entities: nope", times=1
    )
    async with running(settings) as (channel, agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "links"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=15)
        msgs = tg.bot_messages(ALICE)
        # formatted it was one message; as plain source it needs two
        assert [m.parse_mode for m in msgs] == [None, None]
        assert words(" ".join(m.text for m in msgs)) == words(links)
        assert fallbacks(agent) == {"plain": 1}


async def test_a_reply_whose_markup_is_long_but_visible_text_short_is_one_message(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    links = " ".join(f"[link{i}](https://example.org/{'p' * 100}/{i})" for i in range(40))
    llm.enqueue(reply_text(links, chunks=1))
    async with running(settings) as (channel, agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "links"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=15)
        [msg] = tg.bot_messages(ALICE)
        assert msg.parse_mode == "HTML" and len(msg.raw) > 4096
        assert msg.text == " ".join(f"link{i}" for i in range(40))
        assert fallbacks(agent) == {}


async def test_a_part_refused_every_way_is_replaced_by_a_notice(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    llm.enqueue(reply_text("Something Telegram dislikes.", chunks=1))
    refusal = "Bad Request: text refused in this chat"
    tg.inject_error("sendMessage", error_code=400, description=refusal, times=2)  # HTML, then plain
    async with running(settings) as (channel, agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "try"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=15)
        [notice] = tg.messages_in(ALICE)
        assert notice.startswith(
            "⚠️ Telegram refused to show this part of my answer (Text refused in this chat)"
        )
        assert fallbacks(agent) == {"plain": 1, "failed": 1}
        # the answer itself is stored whole
        stored = await stored_messages(agent.store, Scope("default", f"tg:{ALICE}"))
        assert stored[-1].content == "Something Telegram dislikes."


async def test_when_even_the_notice_is_refused_the_failure_is_counted(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    llm.enqueue(reply_text("Nothing gets through.", chunks=1))
    tg.inject_error("sendMessage", error_code=400, description="Bad Request: CHAT_RESTRICTED", times=3)
    async with running(settings) as (channel, agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "try"))
        await tg.wait_for(lambda: channel.stats["failed"] == 1, timeout=15)
        assert tg.messages_in(ALICE) == []
        assert fallbacks(agent) == {"plain": 1, "failed": 1, "undelivered": 1}
