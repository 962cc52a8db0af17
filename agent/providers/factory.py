"""Builds the configured provider, wrapped in the retry / fallback policy."""

from __future__ import annotations

from dataclasses import replace

import httpx

from agent.providers.anthropic import AnthropicProvider
from agent.providers.base import Provider
from agent.providers.openai import OpenAIProvider
from agent.providers.retry import RetryingProvider
from config.settings import LLMSettings

OPENAI_DEFAULT_URL = LLMSettings().base_url
ANTHROPIC_DEFAULT_URL = "https://api.anthropic.com/v1"


def build_provider(settings: LLMSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> Provider:
    """``settings.provider`` is "openai" (any compatible server) or "anthropic"."""
    inner: Provider
    if settings.provider == "openai":
        inner = OpenAIProvider(settings, transport=transport)
    elif settings.provider == "anthropic":
        if settings.base_url == OPENAI_DEFAULT_URL:  # the section's default is OpenAI's URL
            settings = replace(settings, base_url=ANTHROPIC_DEFAULT_URL)
        inner = AnthropicProvider(settings, transport=transport)
    else:
        raise ValueError(f"unknown LLM provider {settings.provider!r} (expected 'openai' or 'anthropic')")
    return RetryingProvider(inner, settings)
