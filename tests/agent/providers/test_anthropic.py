"""AnthropicProvider against FakeAnthropic over real HTTP."""

from __future__ import annotations

import json

import pytest

from agent.errors import ProviderAuthError, ProviderRateLimited, ProviderUnavailable
from agent.providers.anthropic import AnthropicProvider, build_body
from agent.providers.base import (
    ChatMessage,
    ChatRequest,
    ReasoningBlock,
    StreamEnd,
    TextChunk,
    ToolCall,
    ToolSpec,
    UsageReport,
    collect,
)
from tests.agent.providers.conftest import API_KEY, events_of, fast_settings, user_request
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    reply_error,
    reply_raw_events,
    reply_text,
    reply_tool_use,
)

pytestmark = pytest.mark.anyio


def _provider(fake: FakeAnthropic, **overrides: object) -> AnthropicProvider:
    return AnthropicProvider(fast_settings(fake.base_url, provider="anthropic", **overrides))


async def test_streamed_text_headers_and_system_placement(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.enqueue(reply_text("Bonjour tout le monde", chunks=4))
    provider = _provider(fake_anthropic)
    try:
        events = await events_of(provider, user_request())
    finally:
        await provider.aclose()
    texts = [e.text for e in events if isinstance(e, TextChunk)]
    assert len(texts) == 4 and "".join(texts) == "Bonjour tout le monde"
    usage = next(e for e in events if isinstance(e, UsageReport))
    assert usage.prompt_tokens > 0 and usage.completion_tokens == 4
    assert events[-1] == StreamEnd("stop", "fake-model")
    body, headers = fake_anthropic.requests[0], fake_anthropic.headers[0]
    assert headers["x-api-key"] == API_KEY and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert body["system"] == "be brief" and body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


async def test_tool_use_with_input_json_delta(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.enqueue(
        reply_tool_use(
            [("toolu_1", "get_weather", {"city": "Gent", "days": 3}), ("toolu_2", "now", {})],
            text="Checking.",
        )
    )
    provider = _provider(fake_anthropic)
    try:
        out = await collect(provider, user_request())
    finally:
        await provider.aclose()
    assert out.text == "Checking."
    assert [(c.id, c.name, json.loads(c.arguments)) for c in out.tool_calls] == [
        ("toolu_1", "get_weather", {"city": "Gent", "days": 3}),
        ("toolu_2", "now", {}),
    ]
    assert out.finish_reason == "tool_calls"


async def test_thinking_block_round_trip_is_unchanged(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.enqueue(
        reply_tool_use([("toolu_1", "now", {})], thinking=("I should check the clock.", "sig-abc"))
    )
    provider = _provider(fake_anthropic)
    try:
        first = await collect(provider, user_request("what time?"))
        block = {"type": "thinking", "thinking": "I should check the clock.", "signature": "sig-abc"}
        assert first.reasoning == [block]
        follow_up = ChatRequest(
            model="fake-model",
            system="",
            messages=(
                ChatMessage("user", "what time?"),
                ChatMessage("assistant", "", tool_calls=first.tool_calls, reasoning=tuple(first.reasoning)),
                ChatMessage("tool", "12:00", tool_call_id="toolu_1", name="now"),
            ),
        )
        await collect(provider, follow_up)
    finally:
        await provider.aclose()
    sent = fake_anthropic.requests[1]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": [block, {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}],
    }
    assert sent[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "12:00"}],
    }
    assert "system" not in fake_anthropic.requests[1]


async def test_redacted_thinking_passes_through(fake_anthropic: FakeAnthropic) -> None:
    redacted = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}
    fake_anthropic.enqueue(
        reply_raw_events(
            [
                {
                    "type": "message_start",
                    "message": {
                        "model": "claude-x",
                        "usage": {"input_tokens": 5, "cache_read_input_tokens": 7},
                    },
                },
                {"type": "content_block_start", "index": 0, "content_block": redacted},
                {"type": "content_block_stop", "index": 0},
                {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
                {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "ok"}},
                {"type": "content_block_stop", "index": 1},
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "max_tokens"},
                    "usage": {"output_tokens": 9},
                },
                {"type": "message_stop"},
            ]
        )
    )
    provider = _provider(fake_anthropic)
    try:
        events = await events_of(provider, user_request())
    finally:
        await provider.aclose()
    assert ReasoningBlock(redacted) in events
    assert UsageReport(12, 9) in events
    assert events[-1] == StreamEnd("length", "claude-x")


def test_same_role_messages_are_merged_and_tool_results_lead() -> None:
    request = ChatRequest(
        model="m",
        system="sys",
        messages=(
            ChatMessage("assistant", "earlier reply"),  # history cut so that it starts with the assistant
            ChatMessage("user", "first"),
            ChatMessage("user", "second"),
            ChatMessage(
                "assistant", "", tool_calls=(ToolCall("t1", "a", '{"x": 1}'), ToolCall("t2", "b", "not json"))
            ),
            ChatMessage("tool", "A", tool_call_id="t1"),
            ChatMessage("tool", "boom", tool_call_id="t2", is_error=True),
            ChatMessage("user", "and now?"),
            ChatMessage("system", "Summary of older turns."),
            ChatMessage("assistant", ""),  # an empty (interrupted) reply: dropped, not sent empty
        ),
        tools=(ToolSpec("a", "tool a", {"type": "object"}),),
        temperature=0.5,
    )
    body = build_body(request)
    assert body["system"] == "sys\n\nSummary of older turns."
    assert body["tools"] == [{"name": "a", "description": "tool a", "input_schema": {"type": "object"}}]
    assert body["temperature"] == 0.5
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    assert body["messages"][2]["content"] == [
        {"type": "text", "text": "first"},
        {"type": "text", "text": "second"},
    ]
    assert body["messages"][3]["content"][1] == {
        "type": "tool_use",
        "id": "t2",
        "name": "b",
        "input": {"_invalid_arguments": "not json"},
    }
    assert body["messages"][4]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "A"},
        {"type": "tool_result", "tool_use_id": "t2", "content": "boom", "is_error": True},
        {"type": "text", "text": "and now?"},
    ]


async def test_merged_history_reaches_the_server(fake_anthropic: FakeAnthropic) -> None:
    provider = _provider(fake_anthropic)
    request = ChatRequest(
        model="m", system="", messages=(ChatMessage("user", "one"), ChatMessage("user", "two"))
    )
    try:
        out = await collect(provider, request)
    finally:
        await provider.aclose()
    assert out.text == "echo: onetwo"  # the fake echoes the text blocks of the last user message
    assert len(fake_anthropic.requests[0]["messages"]) == 1


async def test_error_event_in_the_stream(fake_anthropic: FakeAnthropic) -> None:
    start = {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 1}}}
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    limited = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    fake_anthropic.enqueue(reply_raw_events([start, overloaded]), reply_raw_events([limited]))
    provider = _provider(fake_anthropic)
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await collect(provider, user_request())
        assert info.value.retryable
        with pytest.raises(ProviderRateLimited):
            await collect(provider, user_request())
    finally:
        await provider.aclose()


async def test_http_errors_and_a_stream_without_message_stop(fake_anthropic: FakeAnthropic) -> None:
    start = {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 1}}}
    fake_anthropic.enqueue(reply_error(401), reply_error(529), reply_raw_events([start]))
    provider = _provider(fake_anthropic)
    try:
        with pytest.raises(ProviderAuthError) as auth:
            await collect(provider, user_request())
        assert API_KEY not in str(auth.value)
        with pytest.raises(ProviderUnavailable):
            await collect(provider, user_request())
        with pytest.raises(ProviderUnavailable, match="ended before"):
            await collect(provider, user_request())
    finally:
        await provider.aclose()


async def test_ping(fake_anthropic: FakeAnthropic) -> None:
    provider = _provider(fake_anthropic)
    try:
        await provider.ping()
        fake_anthropic.api_key = "other"
        with pytest.raises(ProviderAuthError):
            await provider.ping()
    finally:
        await provider.aclose()
