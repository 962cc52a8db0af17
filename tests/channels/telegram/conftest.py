"""Fixtures: the fake Bot API and fake LLM on 127.0.0.1, real settings, store, agent and channel."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.core import Agent
from agent.factory import open_agent
from channels.telegram import TelegramChannel
from config.settings import (
    LLMSettings,
    MemorySettings,
    Settings,
    StoreSettings,
    TelegramSettings,
    UserLink,
)
from store import open_store
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.telegram_server import TOKEN, FakeBotAPI

ALICE = 111  # allowed by id
BOB = 222  # linked: [users.bob] telegram_ids = [222]
MALLORY = 666  # a stranger


@pytest.fixture(autouse=True)
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """PTB 22 warns (an error under our warning filter) each time it builds a ``RetryAfter`` unless
    the timedelta behaviour of ``retry_after`` is opted into; the channel reads the timedelta anyway."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
async def llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def tg() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI() as fake:
        yield fake


@pytest.fixture
def settings(tmp_path: Path, llm: FakeOpenAI, tg: FakeBotAPI) -> Settings:
    return make_settings(tmp_path, llm, tg)


def make_settings(tmp_path: Path, llm: Any, tg: FakeBotAPI, **telegram: Any) -> Settings:
    tele = TelegramSettings(
        enabled=True,
        token=TOKEN,
        api_base_url=tg.base_url,
        allowed_users=(ALICE,),
        poll_timeout_s=1,
        edit_interval_s=0.2,
        watchdog_backoff_s=0.1,
        shutdown_deadline_s=5.0,
    )
    return Settings(
        llm=LLMSettings(base_url=llm.base_url, api_key="sk-test-key", model="fake-model", max_retries=0),
        memory=MemorySettings(enabled=False),
        store=StoreSettings(engine="embedded", path=tmp_path / "data"),
        telegram=dataclasses.replace(tele, **telegram),
        users=(UserLink(name="bob", telegram_ids=(BOB,)),),
    )


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[TelegramChannel, Agent]]:
    """Store, agent and a started channel; everything stopped and closed on exit."""
    async with open_store(settings) as store, open_agent(settings, store) as agent:
        channel = TelegramChannel(settings, agent)
        await channel.start()
        try:
            yield channel, agent
        finally:
            await channel.stop()
