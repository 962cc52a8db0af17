"""HTTP error mapping (no retry layer here): classes, retry hints and secrets kept out."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import structlog

from agent.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderQuotaError,
    ProviderRateLimited,
    ProviderUnavailable,
)
from agent.providers.base import collect
from agent.providers.factory import build_provider
from agent.providers.http import (
    ProviderModelNotFound,
    error_from_payload,
    error_from_response,
    parse_retry_after,
    scrub,
)
from agent.providers.openai import OpenAIProvider
from tests.agent.providers.conftest import API_KEY, fast_settings, user_request
from tests.fakes.openai_server import FakeOpenAI, reply_error, reply_quota_error

pytestmark = pytest.mark.anyio


async def _fail(fake: FakeOpenAI) -> ProviderError:
    provider = OpenAIProvider(fast_settings(fake.base_url))
    try:
        with pytest.raises(ProviderError) as info:
            await collect(provider, user_request())
    finally:
        await provider.aclose()
    return info.value


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, ProviderError, False),
        (403, ProviderAuthError, False),
        (402, ProviderQuotaError, False),
        (408, ProviderUnavailable, True),
        (409, ProviderUnavailable, True),
        (429, ProviderRateLimited, True),
        (500, ProviderUnavailable, True),
        (503, ProviderUnavailable, True),
        (529, ProviderUnavailable, True),
    ],
)
async def test_status_mapping(
    fake_openai: FakeOpenAI, status: int, cls: type[ProviderError], retryable: bool
) -> None:
    fake_openai.enqueue(reply_error(status))
    err = await _fail(fake_openai)
    assert type(err) is cls
    assert err.retryable is retryable
    assert err.status == status
    assert "\n" not in str(err)


async def test_quota_429_is_not_a_rate_limit(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_quota_error())
    err = await _fail(fake_openai)
    assert isinstance(err, ProviderQuotaError) and not err.retryable


async def test_404_naming_the_model_is_model_not_found(fake_openai: FakeOpenAI) -> None:
    body = {
        "error": {
            "message": "The model `gpt-9` does not exist",
            "type": "invalid_request_error",
            "code": "model_not_found",
        }
    }
    fake_openai.enqueue(reply_error(404, body), reply_error(404, "<html>Not Found</html>"))
    assert isinstance(await _fail(fake_openai), ProviderModelNotFound)
    other = await _fail(fake_openai)
    assert type(other) is ProviderError and "Not Found" in str(other)


async def test_rate_limit_carries_retry_after(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        reply_error(429, headers={"retry-after": "7"}), reply_error(429, headers={"retry-after-ms": "250"})
    )
    assert (await _fail(fake_openai)).retry_after == 7.0
    assert (await _fail(fake_openai)).retry_after == 0.25


async def test_401_never_leaks_the_key_into_errors_or_logs(
    fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_openai.api_key = "the-right-key"  # the fake quotes the wrong key back, as OpenAI does
    caplog.set_level(logging.DEBUG)
    provider = build_provider(fast_settings(fake_openai.base_url))
    try:
        with structlog.testing.capture_logs() as logs, pytest.raises(ProviderAuthError) as info:
            await collect(provider, user_request())
    finally:
        await provider.aclose()
    assert fake_openai.request_count == 1  # never retried
    assert API_KEY not in str(info.value) and API_KEY not in repr(info.value)
    chained: BaseException | None = info.value
    while chained is not None:  # nothing in the chain (e.g. an httpx error with headers) holds it
        assert API_KEY not in repr(chained) and API_KEY not in repr(chained.args)
        chained = chained.__cause__ or chained.__context__
    assert API_KEY not in repr(logs)
    assert API_KEY not in caplog.text


def test_scrub_removes_the_secret_and_key_shaped_tokens() -> None:
    text = f"bad key {API_KEY} and sk-proj-abcdefghijklmnop, line\nbreak"
    out = scrub(text, "SECRET")
    assert "SECRET" not in out and "sk-proj-abcdefghijklmnop" not in out and "\n" not in out
    assert len(scrub("x" * 5000, "")) < 300


def test_retry_after_parsing() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now.timestamp()) == pytest.approx(30)
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({}) is None


def test_in_stream_error_codes_as_numbers_or_digit_strings() -> None:
    assert isinstance(error_from_payload({"code": "503", "message": "busy"}, ""), ProviderUnavailable)
    assert isinstance(error_from_payload({"status": 429, "message": "slow"}, ""), ProviderRateLimited)
    assert type(error_from_payload({"code": "bad_thing", "message": "no"}, "")) is ProviderError
    assert isinstance(error_from_payload("plain text error", ""), ProviderError)


def test_anthropic_error_shapes() -> None:
    overloaded = '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert isinstance(error_from_response(529, {}, overloaded, ""), ProviderUnavailable)
    credit = (
        '{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low"}}'
    )
    assert isinstance(error_from_response(400, {}, credit, ""), ProviderQuotaError)
