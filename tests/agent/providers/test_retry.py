"""RetryingProvider over a real OpenAIProvider and FakeOpenAI: retries, idle timeout, fallback."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import anyio
import pytest
import structlog

from agent.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderQuotaError,
    ProviderRateLimited,
    ProviderUnavailable,
)
from agent.providers.anthropic import AnthropicProvider
from agent.providers.base import ReasoningBlock, RetryNotice, StreamEnd, TextChunk, collect
from agent.providers.openai import OpenAIProvider
from agent.providers.retry import RetryingProvider
from config.settings import LLMSettings
from tests.agent.providers.conftest import fast_settings, user_request
from tests.fakes.anthropic_server import FakeAnthropic, reply_raw_events
from tests.fakes.openai_server import FakeOpenAI, reply_error, reply_hang, reply_quota_error, reply_text
from tests.fakes.sse_scripts import Reply, chunk, reply_raw_sse

pytestmark = pytest.mark.anyio

ROLE = chunk({"role": "assistant", "content": ""})


class RecordingSleep:
    """A real (anyio) sleep that also remembers how long each wait was asked to be."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await anyio.sleep(seconds)


def _retrying(settings: LLMSettings, sleep: RecordingSleep | None = None) -> RetryingProvider:
    return RetryingProvider(
        OpenAIProvider(settings), settings, rng=random.Random(7), sleep=sleep or RecordingSleep()
    )


async def _collect(fake: FakeOpenAI, *replies: Reply, **settings: Any) -> tuple[Any, RetryingProvider]:
    fake.enqueue(*replies)
    provider = _retrying(fast_settings(fake.base_url, **settings))
    try:
        with anyio.fail_after(10):
            return await collect(provider, user_request()), provider
    finally:
        await provider.aclose()


async def test_429_with_retry_after_is_retried_and_honoured(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        reply_error(429, headers={"retry-after": "0.04"}),
        reply_error(429, headers={"retry-after-ms": "30"}),
        reply_text("finally"),
    )
    sleep = RecordingSleep()
    provider = _retrying(fast_settings(fake_openai.base_url, retry_max_delay_s=1.0), sleep)
    try:
        with structlog.testing.capture_logs() as logs:
            out = await collect(provider, user_request())
    finally:
        await provider.aclose()
    assert out.text == "finally"
    assert fake_openai.request_count == 3
    assert len(sleep.delays) == 2
    assert sleep.delays[0] >= 0.04 and sleep.delays[1] >= 0.03
    retries = [e for e in logs if e["event"] == "provider.retry"]
    assert [r["attempt"] for r in retries] == [1, 2] and retries[0]["status"] == 429


async def test_retry_after_is_capped_by_the_max_delay(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_error(429, headers={"retry-after": "3600"}), reply_text("ok"))
    sleep = RecordingSleep()
    provider = _retrying(fast_settings(fake_openai.base_url), sleep)
    try:
        assert (await collect(provider, user_request())).text == "ok"
    finally:
        await provider.aclose()
    assert sleep.delays == [0.05]


async def test_500_is_retried(fake_openai: FakeOpenAI) -> None:
    out, _ = await _collect(fake_openai, reply_error(500), reply_text("recovered"))
    assert out.text == "recovered"
    assert fake_openai.request_count == 2


async def test_retries_are_bounded(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(*(reply_error(503) for _ in range(5)))
    provider = _retrying(fast_settings(fake_openai.base_url, max_retries=2))
    try:
        with pytest.raises(ProviderUnavailable):
            await collect(provider, user_request())
    finally:
        await provider.aclose()
    assert fake_openai.request_count == 3


async def test_a_server_that_never_answers_times_out_and_is_retried(fake_openai: FakeOpenAI) -> None:
    out, _ = await _collect(
        fake_openai, reply_hang(), reply_text("second try"), request_timeout_s=0.2, stream_idle_timeout_s=5.0
    )
    assert out.text == "second try"
    assert fake_openai.request_count == 2


async def test_a_stream_silent_before_any_text_hits_the_idle_timeout_and_is_retried(
    fake_openai: FakeOpenAI,
) -> None:
    # headers and a role chunk arrive, then nothing: the httpx read timeout (5 s) is not what fires
    out, _ = await _collect(
        fake_openai,
        reply_raw_sse([ROLE], stall=True),
        reply_text("after idle"),
        request_timeout_s=5.0,
        stream_idle_timeout_s=0.2,
    )
    assert out.text == "after idle"
    assert fake_openai.request_count == 2


async def test_dropped_stream_before_any_text_is_retried(fake_openai: FakeOpenAI) -> None:
    out, _ = await _collect(fake_openai, reply_raw_sse([ROLE], drop=True), reply_text("clean"))
    assert out.text == "clean"
    assert fake_openai.request_count == 2


async def test_dropped_stream_after_text_is_not_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_raw_sse([ROLE, chunk({"content": "partial"})], drop=True), reply_text("never"))
    provider = _retrying(fast_settings(fake_openai.base_url))
    seen: list[str] = []
    try:
        with pytest.raises(ProviderUnavailable):
            async for ev in provider.stream(user_request()):
                if isinstance(ev, TextChunk):
                    seen.append(ev.text)
    finally:
        await provider.aclose()
    assert seen == ["partial"]
    assert fake_openai.request_count == 1


async def test_a_stall_after_text_is_an_error_not_a_retry(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_hang("half an answer"), reply_text("never"))
    provider = _retrying(fast_settings(fake_openai.base_url, stream_idle_timeout_s=0.2))
    try:
        with anyio.fail_after(10), pytest.raises(ProviderUnavailable, match="sent nothing"):
            await collect(provider, user_request())
    finally:
        await provider.aclose()
    assert fake_openai.request_count == 1


async def test_quota_error_is_never_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_quota_error(), reply_text("never"))
    provider = _retrying(fast_settings(fake_openai.base_url, fallback_models=("other",)))
    try:
        with pytest.raises(ProviderQuotaError):
            await collect(provider, user_request())
    finally:
        await provider.aclose()
    assert fake_openai.request_count == 1


async def test_auth_error_neither_retries_nor_falls_back(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_error(401), reply_text("never"))
    provider = _retrying(fast_settings(fake_openai.base_url, fallback_models=("other",)))
    try:
        with pytest.raises(ProviderAuthError):
            await collect(provider, user_request())
    finally:
        await provider.aclose()
    assert fake_openai.request_count == 1


async def test_fallback_models_are_tried_in_order(fake_openai: FakeOpenAI) -> None:
    def by_model(body: dict[str, Any]) -> Reply:
        if body["model"] == "primary":
            return reply_error(500)
        if body["model"] == "second":
            return reply_error(
                404, {"error": {"message": "model `second` not found", "code": "model_not_found"}}
            )
        return reply_text(f"answered by {body['model']}")

    fake_openai.responder = by_model
    settings = fast_settings(fake_openai.base_url, model="primary", fallback_models=("second", "third"))
    provider = _retrying(settings)
    try:
        with structlog.testing.capture_logs() as logs:
            events = [ev async for ev in provider.stream(replace(user_request(), model="primary"))]
    finally:
        await provider.aclose()
    assert [r["model"] for r in fake_openai.requests] == ["primary", "primary", "primary", "second", "third"]
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == "answered by third"
    assert events[-1] == StreamEnd("stop", "third")
    hops = [(e["model"], e["next_model"]) for e in logs if e["event"] == "provider.fallback"]
    assert hops == [("primary", "second"), ("second", "third")]


async def test_a_refused_request_does_not_fall_back(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_error(400), reply_text("never"))
    provider = _retrying(fast_settings(fake_openai.base_url, fallback_models=("other",)))
    try:
        with pytest.raises(ProviderError) as info:
            await collect(provider, user_request())
    finally:
        await provider.aclose()
    assert type(info.value) is ProviderError
    assert fake_openai.request_count == 1


async def test_the_last_fallback_error_is_raised(fake_openai: FakeOpenAI) -> None:
    fake_openai.responder = lambda body: reply_error(429, headers={"retry-after": "0"})
    provider = _retrying(fast_settings(fake_openai.base_url, max_retries=0, fallback_models=("b",)))
    try:
        with pytest.raises(ProviderRateLimited):
            await collect(provider, user_request())
    finally:
        await provider.aclose()
    assert [r["model"] for r in fake_openai.requests] == ["fake-model", "b"]


async def test_consumer_leaving_mid_stream_closes_the_request(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_hang("first words"), reply_text("next"))
    provider = _retrying(fast_settings(fake_openai.base_url, stream_idle_timeout_s=5.0))
    try:
        with anyio.fail_after(5):
            stream = provider.stream(user_request())
            async for ev in stream:
                if isinstance(ev, TextChunk):
                    break
            await stream.aclose()  # type: ignore[attr-defined]
            # the provider is still usable: the next call gets its own answer
            assert (await collect(provider, user_request())).text == "next"
    finally:
        await provider.aclose()


async def test_reasoning_blocks_are_held_until_text_so_retries_never_duplicate_them(
    fake_anthropic: FakeAnthropic,
) -> None:
    start = {
        "type": "message_start",
        "message": {"id": "m", "model": "fake-model", "usage": {"input_tokens": 3}},
    }
    thinking = [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "try 1"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s1"}},
        {"type": "content_block_stop", "index": 0},
    ]
    fake_anthropic.enqueue(
        reply_raw_events([start, *thinking], drop=True), reply_text("done", thinking=("try 2", "s2"))
    )
    settings = fast_settings(fake_anthropic.base_url, provider="anthropic")
    provider = RetryingProvider(AnthropicProvider(settings), settings, sleep=RecordingSleep())
    try:
        events = [ev async for ev in provider.stream(user_request())]
    finally:
        await provider.aclose()
    assert [e for e in events if isinstance(e, ReasoningBlock)] == [
        ReasoningBlock({"type": "thinking", "thinking": "try 2", "signature": "s2"})
    ]
    assert fake_anthropic.request_count == 2


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    settings = LLMSettings(retry_base_delay_s=1.0, retry_max_delay_s=5.0)
    provider = RetryingProvider(OpenAIProvider(settings), settings, rng=random.Random(1))
    for attempt, step in enumerate([1.0, 2.0, 4.0, 5.0, 5.0]):
        delay = provider.backoff(attempt, None)
        assert step / 2 <= delay <= step
    assert provider.backoff(0, 3.0) >= 3.0
    assert provider.backoff(0, 60.0) == 5.0


async def test_a_slow_consumer_does_not_count_as_an_idle_stream(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_text("one two three", chunks=3))
    provider = _retrying(fast_settings(fake_openai.base_url, stream_idle_timeout_s=0.05))
    texts = []
    try:
        async for ev in provider.stream(user_request()):
            if isinstance(ev, TextChunk):
                texts.append(ev.text)
                await anyio.sleep(0.15)  # the caller is busy (e.g. a slow channel), not the server
    finally:
        await provider.aclose()
    assert "".join(texts) == "one two three"
    assert fake_openai.request_count == 1


async def test_outer_cancellation_mid_stream_propagates_and_leaves_the_provider_usable(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.enqueue(reply_hang("streaming then silent"), reply_text("after cancel"))
    provider = _retrying(fast_settings(fake_openai.base_url, stream_idle_timeout_s=30.0))
    seen: list[str] = []
    try:
        with anyio.fail_after(5):
            with anyio.CancelScope() as scope:
                async for ev in provider.stream(user_request()):
                    if isinstance(ev, TextChunk):
                        seen.append(ev.text)
                        scope.cancel()  # as /stop or a vanished client would, while we wait on the server
            assert scope.cancelled_caught
            assert (await collect(provider, user_request())).text == "after cancel"
    finally:
        await provider.aclose()
    assert seen and fake_openai.request_count == 2


async def test_each_retry_is_announced_in_the_stream_before_its_wait(fake_openai: FakeOpenAI) -> None:
    """Channels show "retrying (n/max)" from these notices; they come before the wait, in order."""
    fake_openai.enqueue(reply_error(503), reply_error(429, headers={"retry-after": "0"}), reply_text("up"))
    sleep = RecordingSleep()
    provider = _retrying(fast_settings(fake_openai.base_url, max_retries=3), sleep)
    try:
        with anyio.fail_after(10):
            events = [ev async for ev in provider.stream(user_request())]
    finally:
        await provider.aclose()
    notices = [ev for ev in events if isinstance(ev, RetryNotice)]
    assert [(n.attempt, n.max_retries) for n in notices] == [(1, 3), (2, 3)]
    assert [n.delay_s for n in notices] == [round(d, 3) for d in sleep.delays]
    assert "503" in notices[0].reason or "unavailable" in notices[0].reason.lower()
    assert events.index(notices[-1]) < min(i for i, ev in enumerate(events) if isinstance(ev, TextChunk))
