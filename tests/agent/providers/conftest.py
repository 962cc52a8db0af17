from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from agent.providers.base import ChatMessage, ChatRequest, Provider, ProviderEvent
from config.settings import LLMSettings
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI

API_KEY = "sk-test-SECRET-0123456789abcdef"


def fast_settings(base_url: str, **overrides: Any) -> LLMSettings:
    """Tiny delays so retries and timeouts cost milliseconds."""
    base = LLMSettings(
        base_url=base_url,
        api_key=API_KEY,
        model="fake-model",
        connect_timeout_s=2.0,
        request_timeout_s=2.0,
        stream_idle_timeout_s=0.3,
        max_retries=2,
        retry_base_delay_s=0.01,
        retry_max_delay_s=0.05,
    )
    return replace(base, **overrides)


def user_request(text: str = "hi", **overrides: Any) -> ChatRequest:
    req = ChatRequest(model="fake-model", system="be brief", messages=(ChatMessage("user", text),))
    return replace(req, **overrides)


async def events_of(provider: Provider, request: ChatRequest) -> list[ProviderEvent]:
    return [ev async for ev in provider.stream(request)]


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake
