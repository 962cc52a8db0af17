"""Webhook mode: setWebhook with a secret, our own route checks it, updates are answered once."""

from __future__ import annotations

import dataclasses
import socket

import httpx
import pytest

from channels.errors import ChannelStartError
from channels.telegram import TelegramChannel
from config.settings import Settings
from tests.channels.telegram.conftest import ALICE, running
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.telegram_server import FakeBotAPI

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SECRET = "webhook-secret-for-tests"


def webhook(settings: Settings) -> Settings:
    tele = dataclasses.replace(
        settings.telegram,
        mode="webhook",
        webhook_url="https://bot.example.org/telegram/webhook",
        webhook_secret=SECRET,
        webhook_port=0,
    )
    return dataclasses.replace(settings, telegram=tele)


async def test_webhook_mode_checks_the_secret_and_answers_once(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    async with running(webhook(settings)) as (channel, _agent):
        assert tg.webhook["url"] == "https://bot.example.org/telegram/webhook"
        assert tg.webhook["secret_token"] == SECRET
        url = f"http://127.0.0.1:{channel.webhook_port}/telegram/webhook"
        update = tg.text_update(ALICE, ALICE, "via webhook")
        update["update_id"] = 4242
        async with httpx.AsyncClient() as client:
            assert (await client.post(url, json=update)).status_code == 403
            wrong = {"X-Telegram-Bot-Api-Secret-Token": "guess"}
            assert (await client.post(url, json=update, headers=wrong)).status_code == 403
            good = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            assert (await client.post(url, content=b"{not json", headers=good)).status_code == 400
            assert (await client.post(url, json=[1, 2], headers=good)).status_code == 400
            assert (await client.post(url, json=update, headers=good)).status_code == 200
            await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
            # Telegram retries a delivery it considers failed: the same update is not answered twice
            assert (await client.post(url, json=update, headers=good)).status_code == 200
            await tg.wait_for(lambda: channel.stats["duplicates"] == 1, timeout=10)
        assert tg.messages_in(ALICE) == ["echo: via webhook"]
        assert tg.counts["getUpdates"] == 0
        assert llm.request_count == 1


async def test_webhook_mode_without_a_secret_refuses_to_start(settings: Settings, tg: FakeBotAPI) -> None:
    bad = dataclasses.replace(
        webhook(settings), telegram=dataclasses.replace(webhook(settings).telegram, webhook_secret="")
    )
    channel = TelegramChannel(bad, None)  # type: ignore[arg-type]
    with pytest.raises(ChannelStartError, match="webhook_secret"):
        await channel.start()
    await channel.stop()
    assert tg.counts["getMe"] == 0


async def test_webhook_port_in_use_is_one_clear_line(settings: Settings, tg: FakeBotAPI) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = dataclasses.replace(webhook(settings).telegram, webhook_port=port)
        channel = TelegramChannel(dataclasses.replace(settings, telegram=taken), None)  # type: ignore[arg-type]
        with pytest.raises(ChannelStartError, match=f"cannot listen for the webhook on 127.0.0.1:{port}"):
            await channel.start()
        await channel.stop()
    assert tg.webhook == {}  # the webhook is only set once we listen
