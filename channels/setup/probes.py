"""Probes shared by ``init`` and ``doctor``: what the provider says about the key and the models, a
one-token test call, and the Bot API's ``getMe``.

Each probe answers a :class:`Finding`: ``ok``, a one-line ``detail`` for people, and on failure the
``fix`` in one line. No secret ever reaches a detail: provider errors are scrubbed by the adapters,
and the bot token is cut out of every Bot API message.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import anyio
import httpx

from agent.errors import ProviderAuthError, ProviderError, ProviderUnavailable
from agent.providers.base import ChatMessage, ChatRequest, collect
from agent.providers.factory import build_provider
from agent.providers.http import ProviderModelNotFound
from config.settings import LLMSettings, TelegramSettings

PROBE_DEADLINE_S = 20.0
KEY_FIX = "set the key: OPENAI_API_KEY / ANTHROPIC_API_KEY or llm.api_key (`hero-agent init` asks for it)"
MODEL_FIX = "set llm.model to a model the server has (`hero-agent init` lists them)"
URL_FIX = "check llm.base_url (is the server running? for Ollama: http://127.0.0.1:11434/v1)"


@dataclass(frozen=True, slots=True)
class Finding:
    ok: bool
    detail: str
    fix: str = ""


@dataclass(slots=True)
class ProviderReport:
    """What the provider said: reachable, key accepted, the models it lists (None: it cannot say)."""

    #: None: not contacted (a hosted API and no key at all)
    reachable: Finding | None
    key: Finding | None = None
    models: list[str] | None = field(default=None)


def _one_shot(settings: LLMSettings) -> LLMSettings:
    """No retries for probes: a person is waiting for the verdict."""
    return replace(settings, max_retries=0, fallback_models=(), request_timeout_s=PROBE_DEADLINE_S)


async def probe_provider(settings: LLMSettings) -> ProviderReport:
    """Reach the server and present the key by listing its models."""
    try:
        provider = build_provider(_one_shot(settings))
    except ProviderError as exc:  # a hosted API without any key
        return ProviderReport(None, Finding(False, str(exc), KEY_FIX))
    try:
        with anyio.fail_after(PROBE_DEADLINE_S):
            models = await provider.list_models()
    except TimeoutError:
        return ProviderReport(Finding(False, f"no answer from {settings.base_url}", URL_FIX))
    except ProviderAuthError as exc:
        return ProviderReport(
            Finding(True, f"{settings.base_url} answers"), Finding(False, str(exc), KEY_FIX)
        )
    except ProviderUnavailable as exc:
        return ProviderReport(Finding(False, str(exc), URL_FIX))
    except ProviderError as exc:
        return ProviderReport(Finding(False, str(exc), URL_FIX))
    finally:
        await provider.aclose()
    key = Finding(True, "accepted" if settings.api_key else "none needed")
    if models is None:
        key = Finding(True, "not checked by listing (the test call checks it)")
    return ProviderReport(Finding(True, f"{settings.base_url} answers"), key, models)


async def trial_call(settings: LLMSettings) -> Finding:
    """One tiny real completion: proves the key and the model together (what a chat will do)."""
    request = ChatRequest(
        model=settings.model,
        system="Answer with one word.",
        messages=(ChatMessage(role="user", content="Say OK."),),
        max_tokens=8,
    )
    try:
        provider = build_provider(_one_shot(settings))
    except ProviderError as exc:
        return Finding(False, str(exc), KEY_FIX)
    try:
        with anyio.fail_after(PROBE_DEADLINE_S):
            reply = await collect(provider, request)
    except TimeoutError:
        return Finding(False, f"no answer within {PROBE_DEADLINE_S:g} s", URL_FIX)
    except ProviderAuthError as exc:
        return Finding(False, str(exc), KEY_FIX)
    except ProviderModelNotFound as exc:
        return Finding(False, str(exc), MODEL_FIX)
    except ProviderError as exc:
        return Finding(False, str(exc), URL_FIX)
    finally:
        await provider.aclose()
    said = " ".join(reply.text.split())[:40]
    return Finding(True, f"{reply.model or settings.model} answered {said!r}")


def model_finding(model: str, models: list[str] | None) -> Finding:
    if models is None:
        return Finding(True, f"{model} (the server does not list its models)")
    if model in models:
        return Finding(True, model)
    offered = ", ".join(models[:8]) + (", ..." if len(models) > 8 else "")
    return Finding(False, f"{model} is not offered by the server", f"set llm.model to one of: {offered}")


def bot_api_url(settings: TelegramSettings, token: str, method: str) -> str:
    """Where python-telegram-bot would send ``method`` (``{token}`` in the base is replaced)."""
    base = settings.api_base_url
    if "{token}" in base:
        return f"{base.replace('{token}', token)}/{method}"
    return f"{base}{token}/{method}"


async def probe_bot(settings: TelegramSettings, token: str) -> Finding:
    """``getMe``: the token works, and the bot's name; never echoes the token."""
    fix = "get a token from @BotFather and set TELEGRAM_BOT_TOKEN or telegram.token"
    if not token:
        return Finding(False, "no bot token", fix)
    try:
        async with httpx.AsyncClient(timeout=PROBE_DEADLINE_S) as client:
            resp = await client.get(bot_api_url(settings, token, "getMe"))
    except httpx.HTTPError as exc:
        where = settings.api_base_url.replace("{token}", "")
        reason = f"cannot reach the Bot API at {where} ({type(exc).__name__})"
        return Finding(False, reason, "check telegram.api_base_url")
    if resp.status_code in (401, 404):
        return Finding(False, "the Bot API rejected the token", fix)
    try:
        body = resp.json()
        user = body["result"]
        name = f"@{user['username']}"
    except (ValueError, KeyError, TypeError):
        detail = resp.text.replace(token, "***")[:120]
        return Finding(False, f"unexpected answer from the Bot API (HTTP {resp.status_code}): {detail}", fix)
    return Finding(True, f"{name} ({user.get('first_name', '')})".replace(" ()", ""))
