"""The polling watchdog on its own: a real PTB Updater against the fake Bot API."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from telegram import Bot, Update
from telegram.ext import Updater
from telegram.request import HTTPXRequest

from channels.telegram.polling import LivenessRequest, PollingWatchdog
from config.settings import TelegramSettings
from tests.fakes.telegram_server import TOKEN, FakeBotAPI

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_stalled_poller_is_restarted(tg: FakeBotAPI) -> None:
    polls = LivenessRequest(read_timeout=10.0)
    bot = Bot(TOKEN, base_url=tg.base_url, request=HTTPXRequest(), get_updates_request=polls)
    queue: asyncio.Queue[object] = asyncio.Queue()
    updater = Updater(bot, queue)
    settings = TelegramSettings(poll_timeout_s=1, watchdog_backoff_s=0.05)
    watchdog = PollingWatchdog(updater, polls, settings, stall_after_s=1.0)
    async with updater:
        await watchdog.start_polling()
        async with anyio.create_task_group() as group:
            group.start_soon(watchdog.run)
            tg.stall_polls = True  # the connection hangs: no answer, no error
            await tg.wait_for(lambda: watchdog.restarts >= 1, timeout=10)
            tg.stall_polls = False
            update_id = tg.push_update(tg.text_update(5, 5, "after the stall"))
            with anyio.fail_after(10):
                update = await queue.get()
            assert isinstance(update, Update) and update.update_id == update_id
            group.cancel_scope.cancel()
        await watchdog.stop()
    assert tg.counts["deleteWebhook"] >= 2  # polling bootstrapped again
