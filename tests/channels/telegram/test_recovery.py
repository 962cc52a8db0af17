"""Restarts, competing pollers, network errors, start-up failures, and the token kept out of logs."""

from __future__ import annotations

import dataclasses
import logging
import socket
from pathlib import Path

import httpx
import pytest

from channels.errors import ChannelStartError
from channels.telegram import TelegramChannel
from channels.telegram.responder import INTERRUPTED
from config.settings import Settings
from store import Scope, open_store
from tests.channels.telegram.conftest import ALICE, running
from tests.channels.telegram.helpers import stored_messages
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_hang, reply_text
from tests.fakes.telegram_server import TOKEN, FakeBotAPI

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_restart_with_unconfirmed_updates_answers_nothing_twice(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    # the process "dies" before Telegram learns our offset: every update is delivered again
    tg.confirm_offsets = False
    async with running(settings) as (first, _agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "/context work"))
        tg.push_update(tg.text_update(ALICE, ALICE, "before the restart"))
        await tg.wait_for(lambda: first.stats["answered"] == 2, timeout=10)
    assert tg.pending_updates == 2  # still unconfirmed

    async with running(settings) as (second, agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "after the restart"))
        await tg.wait_for(lambda: second.stats["answered"] == 1, timeout=10)
        assert second.stats["duplicates"] == 2
        assert tg.messages_in(ALICE) == [
            "Switched to context work.",
            "echo: before the restart",
            "echo: after the restart",
        ]
        # the chat's context survived the restart too
        stored = await stored_messages(agent.store, Scope("work", f"tg:{ALICE}"))
        assert [m.content for m in stored if m.role == "user"] == ["before the restart", "after the restart"]
    assert llm.request_count == 2


async def test_an_update_cut_before_its_answer_is_answered_after_the_restart(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    # the first process takes the update but goes away before it could answer (the model hangs);
    # Telegram delivers the update again, and the second process answers it instead of skipping it
    tg.confirm_offsets = False
    llm.enqueue(reply_hang("thinking"))
    async with running(settings) as (first, _agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "are you there?"))
        await llm.wait_for_requests(1)
    assert first.stats["answered"] == 0 and tg.pending_updates == 1

    async with running(settings) as (second, agent):
        await tg.wait_for(lambda: second.stats["answered"] == 1, timeout=10)
        assert second.stats["duplicates"] == 0
        assert tg.messages_in(ALICE)[-1] == "echo: are you there?"
        stored = await stored_messages(agent.store, Scope(settings.agent.default_context, f"tg:{ALICE}"))
        # one user message (the redelivery reuses it), the cut reply marked, then the answer
        assert [(m.role, m.status) for m in stored] == [
            ("user", "complete"),
            ("assistant", "interrupted"),
            ("assistant", "complete"),
        ]


async def test_a_second_poller_causes_conflicts_and_the_watchdog_recovers(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    async with running(settings) as (channel, _agent):
        watchdog = channel.watchdog
        assert watchdog is not None
        await tg.wait_for(lambda: tg.counts["getUpdates"] >= 1, timeout=5)
        # another process polls with the same token: each of its requests ends ours with a 409
        async with httpx.AsyncClient(base_url=f"{tg.base_url}{TOKEN}") as rogue:
            for _ in range(3):
                await rogue.post("/getUpdates", data={"timeout": "0.3"})
        await tg.wait_for(lambda: watchdog.conflicts >= 1, timeout=10)
        await tg.wait_for(lambda: watchdog.restarts >= 1, timeout=10)
        tg.push_update(tg.text_update(ALICE, ALICE, "are you back?"))
        await tg.wait_for(lambda: tg.messages_in(ALICE) == ["echo: are you back?"], timeout=20)


async def test_injected_conflicts_restart_polling(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    async with running(settings) as (channel, _agent):
        assert channel.watchdog is not None
        deletes_before = tg.counts["deleteWebhook"]
        tg.inject_conflict(times=2)
        await tg.wait_for(lambda: tg.errors_sent["getUpdates"] == 2, timeout=10)
        tg.push_update(tg.text_update(ALICE, ALICE, "hello after conflict"))
        await tg.wait_for(lambda: tg.messages_in(ALICE) == ["echo: hello after conflict"], timeout=20)
        assert channel.watchdog.restarts >= 1
        # a restart bootstraps again: a stale webhook (another cause of 409) is removed
        assert tg.counts["deleteWebhook"] > deletes_before


async def test_network_errors_while_polling_are_survived(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    async with running(settings) as (channel, _agent):
        tg.inject_error("getUpdates", error_code=502, times=2)
        await tg.wait_for(lambda: tg.errors_sent["getUpdates"] == 2, timeout=10)
        tg.push_update(tg.text_update(ALICE, ALICE, "still polling?"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=20)
        assert tg.messages_in(ALICE) == ["echo: still polling?"]


async def test_a_rejected_token_is_one_clear_line_without_the_token(
    settings: Settings, tg: FakeBotAPI, tmp_path: Path
) -> None:
    bad = "999999:WRONG-token-abcdefghijklmnopqrstuvw"
    settings = dataclasses.replace(settings, telegram=dataclasses.replace(settings.telegram, token=bad))
    channel = TelegramChannel(settings, _NoAgent())  # type: ignore[arg-type]
    with pytest.raises(ChannelStartError) as info:
        await channel.start()
    message = str(info.value)
    assert message == "telegram: the Bot API rejected the bot token"
    assert bad not in message and "\n" not in message
    await channel.stop()  # idempotent after a failed start
    await channel.stop()


async def test_an_unreachable_api_is_one_clear_line(settings: Settings) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}/bot"
    settings = dataclasses.replace(
        settings, telegram=dataclasses.replace(settings.telegram, api_base_url=base)
    )
    channel = TelegramChannel(settings, _NoAgent())  # type: ignore[arg-type]
    with pytest.raises(ChannelStartError, match=f"cannot reach the Bot API at {base}$"):
        await channel.start()
    await channel.stop()


async def test_the_token_never_reaches_the_logs(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(settings) as (channel, _agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "hi"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
    # (the fake server's own access log is not ours: it prints the paths it serves)
    messages = [r.getMessage() for r in caplog.records if r.name != "uvicorn.access"]
    assert any("getUpdates" in m for m in messages)  # httpx did log the request URLs...
    assert not any(TOKEN in m for m in messages)  # ...with the token masked


class _NoAgent:
    """Start-up fails before the channel touches its agent; an agent is not needed to prove that."""

    store = None


async def test_stopping_mid_reply_says_so_and_keeps_history_consistent(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    tele = dataclasses.replace(settings.telegram, shutdown_deadline_s=0.2, edit_interval_s=0.1)
    settings = dataclasses.replace(settings, telegram=tele)
    llm.enqueue(reply_text("word " * 300, chunks=300, chunk_delay=0.05))
    async with running(settings) as (_channel, _agent):
        tg.push_update(tg.text_update(ALICE, ALICE, "a very long story please"))
        await tg.wait_for(lambda: tg.messages_in(ALICE), timeout=10)  # streaming has begun
    [text] = tg.messages_in(ALICE)
    assert text.startswith("word word") and text.endswith(INTERRUPTED)
    async with open_store(settings) as store:
        stored = await stored_messages(store, Scope("default", f"tg:{ALICE}"))
    assert [(m.role, m.status) for m in stored] == [("user", "complete"), ("assistant", "interrupted")]
