from __future__ import annotations

import pytest

from agent.providers.anthropic import AnthropicProvider
from agent.providers.base import collect
from agent.providers.factory import build_provider
from agent.providers.openai import OpenAIProvider
from agent.providers.retry import RetryingProvider
from config.settings import LLMSettings
from tests.agent.providers.conftest import fast_settings, user_request
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI, reply_error, reply_text

pytestmark = pytest.mark.anyio


async def test_openai_provider_is_built_with_retries(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_error(502), reply_text("via factory"))
    provider = build_provider(fast_settings(fake_openai.base_url))
    try:
        assert isinstance(provider, RetryingProvider) and isinstance(provider.inner, OpenAIProvider)
        assert provider.name == "openai"
        assert (await collect(provider, user_request())).text == "via factory"
        await provider.ping()
    finally:
        await provider.aclose()
    assert fake_openai.request_count == 2


async def test_anthropic_provider_is_built_with_retries(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.enqueue(reply_error(529), reply_text("claude here"))
    provider = build_provider(fast_settings(fake_anthropic.base_url, provider="anthropic"))
    try:
        assert isinstance(provider, RetryingProvider) and isinstance(provider.inner, AnthropicProvider)
        assert (await collect(provider, user_request())).text == "claude here"
    finally:
        await provider.aclose()
    assert fake_anthropic.request_count == 2


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown LLM provider"):
        build_provider(LLMSettings(provider="cohere"))
