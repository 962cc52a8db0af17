from __future__ import annotations

from dataclasses import replace

import pytest

from agent.errors import ProviderAuthError, ProviderUnavailable
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
        build_provider(LLMSettings(provider="cohere", api_key="k"))


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_hosted_api_without_a_key_fails_at_build_time(provider: str) -> None:
    """The error names both conventional variables: the user may hold either key."""
    with pytest.raises(ProviderAuthError) as raised:
        build_provider(LLMSettings(provider=provider, api_key=""))
    assert "OPENAI_API_KEY" in str(raised.value) and "ANTHROPIC_API_KEY" in str(raised.value)


async def test_a_local_server_needs_no_key(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_text("keyless"))
    provider = build_provider(replace(fast_settings(fake_openai.base_url), api_key=""))
    try:
        assert (await collect(provider, user_request())).text == "keyless"
    finally:
        await provider.aclose()


async def test_an_unreachable_server_is_named_in_the_log_detail_only() -> None:
    """The message reaches end users (a chat, the web page): it must not carry the provider's address.
    ``detail`` (logged by ``llm.failed``) does, for the operator."""
    settings = replace(fast_settings("http://127.0.0.1:9/v1"), max_retries=0)
    provider = build_provider(settings)
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await collect(provider, user_request())
    finally:
        await provider.aclose()
    assert str(info.value) == "connection to the LLM provider failed (ConnectError)"
    assert info.value.detail == "base_url http://127.0.0.1:9"


async def test_an_anthropic_origin_gets_the_api_version_path(fake_anthropic: FakeAnthropic) -> None:
    """``ANTHROPIC_BASE_URL=https://api.anthropic.com`` (the loader's default) is a bare origin."""
    origin = fake_anthropic.base_url.removesuffix("/v1")
    fake_anthropic.enqueue(reply_text("from the origin"))
    provider = build_provider(replace(fast_settings(origin), provider="anthropic"))
    try:
        assert (await collect(provider, user_request())).text == "from the origin"
    finally:
        await provider.aclose()
