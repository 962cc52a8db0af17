"""OpenAIProvider against FakeOpenAI over real HTTP: streaming, translation, tool calls."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace

import pytest

from agent.errors import ProviderAuthError, ProviderError, ProviderUnavailable
from agent.providers.base import (
    TEXT_STATS,
    ChatMessage,
    ChatRequest,
    ImagePart,
    Sampling,
    StreamEnd,
    TextChunk,
    ToolCall,
    ToolCallsReady,
    ToolSpec,
    UsageReport,
    collect,
)
from agent.providers.openai import OpenAIProvider, build_body, encode_body
from tests.agent.providers.conftest import API_KEY, events_of, fast_settings, user_request
from tests.fakes.openai_server import FakeOpenAI, reply_error, reply_raw_sse, reply_text, reply_tool_calls
from tests.fakes.sse_scripts import DONE, chunk, sse

pytestmark = pytest.mark.anyio


async def test_streamed_text_arrives_in_chunks_with_usage_and_end(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_text("Hello there", chunks=3))
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    try:
        events = await events_of(provider, user_request())
    finally:
        await provider.aclose()
    texts = [e.text for e in events if isinstance(e, TextChunk)]
    # three SSE events; those one socket read brings in together come out as one chunk (test_h1.py)
    assert 1 <= len(texts) <= 3 and all(texts)
    assert "".join(texts) == "Hello there"
    usage = [e for e in events if isinstance(e, UsageReport)]
    assert len(usage) == 1 and usage[0].prompt_tokens > 0 and usage[0].completion_tokens == 3
    assert events[-1] == StreamEnd("stop", "fake-model")
    body = fake_openai.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert fake_openai.headers[0]["authorization"] == f"Bearer {API_KEY}"


async def test_request_translation(fake_openai: FakeOpenAI) -> None:
    request = ChatRequest(
        model="m1",
        system="SYSTEM PROMPT",
        messages=(
            ChatMessage("user", "what time is it?"),
            ChatMessage("assistant", "", tool_calls=(ToolCall("call_1", "get_time", '{"tz": "UTC"}'),)),
            ChatMessage("tool", "12:00", tool_call_id="call_1", name="get_time"),
            ChatMessage("assistant", "It is noon.", reasoning=({"type": "thinking", "thinking": "x"},)),
            ChatMessage("user", "thanks"),
        ),
        tools=(ToolSpec("get_time", "Current time", {"type": "object", "properties": {}}),),
        max_tokens=77,
        temperature=0.2,
    )
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    try:
        out = await collect(provider, request)
    finally:
        await provider.aclose()
    assert out.text == "echo: thanks"
    body = fake_openai.requests[0]
    assert body["model"] == "m1" and body["max_tokens"] == 77 and body["temperature"] == 0.2
    assert body["messages"] == [
        {"role": "system", "content": "SYSTEM PROMPT"},
        {"role": "user", "content": "what time is it?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"tz": "UTC"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
        {"role": "assistant", "content": "It is noon."},
        {"role": "user", "content": "thanks"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_time",
                "description": "Current time",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]


async def test_one_tool_call_after_some_text(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        reply_tool_calls([("call_1", "get_time", '{"tz": "Europe/Brussels"}')], text="Let me see.")
    )
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    try:
        events = await events_of(provider, user_request())
    finally:
        await provider.aclose()
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == "Let me see."
    ready = [e for e in events if isinstance(e, ToolCallsReady)]
    assert ready == [ToolCallsReady((ToolCall("call_1", "get_time", '{"tz": "Europe/Brussels"}'),))]
    assert events[-1] == StreamEnd("tool_calls", "fake-model")


async def test_parallel_tool_calls_keep_their_order(fake_openai: FakeOpenAI) -> None:
    calls = [("c1", "a", '{"n": 1}'), ("c2", "b", '{"n": 2}'), ("c3", "a", '{"n": 3}')]
    fake_openai.enqueue(reply_tool_calls(calls))
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    try:
        out = await collect(provider, user_request())
    finally:
        await provider.aclose()
    assert out.tool_calls == tuple(ToolCall(*c) for c in calls)
    assert [json.loads(c.arguments)["n"] for c in out.tool_calls] == [1, 2, 3]
    assert out.finish_reason == "tool_calls"


async def test_without_a_key_no_authorization_header_is_sent(fake_openai: FakeOpenAI) -> None:
    provider = OpenAIProvider(fast_settings(fake_openai.base_url, api_key=""))
    try:
        out = await collect(provider, user_request("local model"))
    finally:
        await provider.aclose()
    assert out.text == "echo: local model"
    assert "authorization" not in fake_openai.headers[0]


async def test_ping_checks_reachability_and_the_key(fake_openai: FakeOpenAI) -> None:
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    try:
        await provider.ping()
    finally:
        await provider.aclose()
    fake_openai.api_key = "another-key"
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    try:
        with pytest.raises(ProviderAuthError):
            await provider.ping()
    finally:
        await provider.aclose()


async def test_unreachable_server_fails_ping() -> None:
    async with FakeOpenAI() as fake:
        url = fake.base_url
    provider = OpenAIProvider(fast_settings(url))
    try:
        with pytest.raises(ProviderUnavailable):
            await provider.ping()
    finally:
        await provider.aclose()


async def test_one_client_is_pooled_across_requests(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_text("one"), reply_text("two"))
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    try:
        first = await collect(provider, user_request())
        second = await collect(provider, user_request())
    finally:
        await provider.aclose()
    assert (first.text, second.text) == ("one", "two")
    assert fake_openai.request_count == 2
    assert len(set(fake_openai.peers)) == 1  # the same TCP connection served both


async def test_max_tokens_is_renamed_for_servers_that_refuse_it(fake_openai: FakeOpenAI) -> None:
    refusal = {
        "error": {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }
    }
    fake_openai.responder = lambda body: reply_error(400, refusal) if "max_tokens" in body else None
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    try:
        first = await collect(provider, user_request("one"))
        second = await collect(provider, user_request("two"))
    finally:
        await provider.aclose()
    assert (first.text, second.text) == ("echo: one", "echo: two")
    assert ["max_tokens" in r for r in fake_openai.requests] == [True, False, False]
    assert fake_openai.requests[1]["max_completion_tokens"] == 4096


def test_encoded_body_is_the_built_body_and_each_message_is_encoded_once() -> None:
    image = ImagePart("att1", "cat.png", "image/png", 2, 2, data=b"\x89PNG")
    messages = (
        ChatMessage("user", "caf\u00e9 \u2603"),
        ChatMessage("assistant", "", tool_calls=(ToolCall("c1", "clock", "{}"),)),
        ChatMessage("tool", "12:00", tool_call_id="c1", name="clock"),
        ChatMessage("user", "look", images=(image,)),
    )
    tool = ToolSpec("clock", "the time", {"type": "object"})
    request = ChatRequest("m", "be brief", messages, tools=(tool,), temperature=0.5)
    encoded = encode_body(request, completion_tokens_key="max_completion_tokens")
    assert json.loads(encoded) == build_body(request, completion_tokens_key="max_completion_tokens")
    # the memo: text messages keep their JSON (the same bytes object next time), image bytes never
    first = [m.wire[1] for m in messages[:3]]
    encode_body(request)
    assert [m.wire[1] for m in messages[:3]] == first and all(
        a is b for a, b in zip(first, [m.wire[1] for m in messages[:3]], strict=True)
    )
    assert messages[3].wire == ("", b"")
    # a tool's JSON is kept with its spec too (the registry hands out the same specs every turn)
    tool_bytes = tool.wire[1]
    assert tool.wire[0] == "openai" and json.loads(tool_bytes) == build_body(request)["tools"][0]
    encode_body(request)
    assert tool.wire[1] is tool_bytes
    # the parameters that depend on tools still go with them
    chosen = replace(request, sampling=Sampling(tool_choice="required", parallel_tool_calls=False))
    assert json.loads(encode_body(chosen)) == build_body(chosen)
    assert json.loads(encode_body(replace(request, tools=()))) == build_body(replace(request, tools=()))


async def test_text_events_read_together_go_on_as_one_chunk(fake_openai: FakeOpenAI) -> None:
    """Twenty text events written at once (one TCP write, so one or very few reads) reach the turn as
    fewer chunks with exactly the same text; the counters in /metrics say how many were joined."""
    words = [f"w{i} " for i in range(20)]
    burst = "".join(sse(chunk({"content": w})) for w in words)
    fake_openai.enqueue(reply_raw_sse([burst, sse(chunk({}, "stop")), DONE]))
    before = dataclasses.replace(TEXT_STATS)
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    try:
        events = await events_of(provider, user_request())
    finally:
        await provider.aclose()
    texts = [e.text for e in events if isinstance(e, TextChunk)]
    assert "".join(texts) == "".join(words)
    assert 1 <= len(texts) < len(words)
    assert TEXT_STATS.events - before.events == len(words)
    assert TEXT_STATS.chunks - before.chunks == len(texts)
    assert events[-1] == StreamEnd("stop", "fake-model")


async def test_text_before_an_error_in_the_same_read_is_handed_on_first(fake_openai: FakeOpenAI) -> None:
    """An error object in the stream still comes after the text the server sent before it."""
    lines = sse(chunk({"content": "partial "})) + sse({"error": {"message": "overloaded", "code": 500}})
    fake_openai.enqueue(reply_raw_sse([lines]))
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    seen: list[object] = []
    try:
        with pytest.raises(ProviderError):
            async for event in provider.stream(user_request()):
                seen.append(event)
    finally:
        await provider.aclose()
    assert seen == [TextChunk("partial ")]
