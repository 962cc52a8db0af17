"""Builds the configured provider, wrapped in the retry / fallback policy."""

from __future__ import annotations

from dataclasses import replace

import httpx2

from agent.errors import ProviderAuthError
from agent.providers.anthropic import AnthropicProvider
from agent.providers.base import Provider
from agent.providers.openai import OpenAIProvider
from agent.providers.retry import RetryingProvider
from config.settings import LLMSettings

OPENAI_DEFAULT_URL = LLMSettings().base_url
ANTHROPIC_DEFAULT_URL = "https://api.anthropic.com/v1"
#: hosted APIs that never answer without a key: fail at start instead of at the first turn
KEYED_HOSTS = frozenset({"api.openai.com", "api.anthropic.com"})


def build_provider(settings: LLMSettings) -> Provider:
    """``settings.provider`` is "openai" (any compatible server) or "anthropic"."""
    if settings.provider == "anthropic" and settings.base_url == OPENAI_DEFAULT_URL:
        settings = replace(settings, base_url=ANTHROPIC_DEFAULT_URL)  # the section's default is OpenAI's
    elif settings.provider == "anthropic" and httpx2.URL(settings.base_url).path in ("", "/"):
        # ANTHROPIC_BASE_URL is a bare origin by convention (the official SDKs add /v1 themselves)
        settings = replace(settings, base_url=settings.base_url.rstrip("/") + "/v1")
    host = httpx2.URL(settings.base_url).host
    if not settings.api_key and host in KEYED_HOSTS:
        raise ProviderAuthError(
            f"no API key for {host}: set OPENAI_API_KEY (OpenAI) or ANTHROPIC_API_KEY (Anthropic), "
            "or llm.api_key (or point llm.base_url at a local OpenAI-compatible server; "
            "`hero-agent init` sets this up)"
        )
    inner: Provider
    if settings.provider == "openai":
        inner = OpenAIProvider(settings)
    elif settings.provider == "anthropic":
        inner = AnthropicProvider(settings)
    else:
        raise ValueError(f"unknown LLM provider {settings.provider!r} (expected 'openai' or 'anthropic')")
    return RetryingProvider(inner, settings)
