"""Every stream variant of issue 3 point 1, one test each, sent byte for byte by FakeOpenAI."""

from __future__ import annotations

import pytest

from agent.errors import ProviderError, ProviderQuotaError, ProviderRateLimited, ProviderUnavailable
from agent.providers.base import CollectedResponse, StreamEnd, ToolCall, UsageReport, collect
from agent.providers.openai import OpenAIProvider
from tests.agent.providers.conftest import events_of, fast_settings, user_request
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import (
    DONE,
    KEEP_ALIVE,
    RawLine,
    chunk,
    reply_raw_sse,
    sse,
    tool_delta,
    usage_chunk,
)

pytestmark = pytest.mark.anyio

ROLE = chunk({"role": "assistant", "content": ""})


async def _run(fake: FakeOpenAI, lines: list[RawLine], *, drop: bool = False) -> CollectedResponse:
    fake.enqueue(reply_raw_sse(lines, drop=drop))
    provider = OpenAIProvider(fast_settings(fake.base_url))
    try:
        return await collect(provider, user_request())
    finally:
        await provider.aclose()


def _calls(*deltas: dict[str, object]) -> dict[str, object]:
    return chunk({"tool_calls": list(deltas)})


async def test_whole_call_in_one_chunk(fake_openai: FakeOpenAI) -> None:
    out = await _run(
        fake_openai,
        [
            ROLE,
            _calls(
                tool_delta(0, id="c1", name="f", arguments='{"a": 1}'),
                tool_delta(1, id="c2", name="g", arguments="{}"),
            ),
            chunk({}, "tool_calls"),
            DONE,
        ],
    )
    assert out.tool_calls == (ToolCall("c1", "f", '{"a": 1}'), ToolCall("c2", "g", "{}"))
    assert out.finish_reason == "tool_calls"


async def test_parallel_calls_all_at_index_zero_with_distinct_ids(fake_openai: FakeOpenAI) -> None:
    out = await _run(
        fake_openai,
        [
            ROLE,
            _calls(tool_delta(0, id="c1", name="f", arguments="")),
            _calls(tool_delta(0, arguments='{"x": ')),
            _calls(tool_delta(0, arguments="1}")),
            _calls(tool_delta(0, id="c2", name="g", arguments="")),
            _calls(tool_delta(0, arguments='{"y": 2}')),
            chunk({}, "tool_calls"),
            DONE,
        ],
    )
    assert out.tool_calls == (ToolCall("c1", "f", '{"x": 1}'), ToolCall("c2", "g", '{"y": 2}'))


async def test_missing_index(fake_openai: FakeOpenAI) -> None:
    out = await _run(
        fake_openai,
        [
            ROLE,
            _calls(tool_delta(None, id="c1", name="f", arguments='{"q": ')),
            _calls(tool_delta(None, arguments='"a"}')),
            _calls(tool_delta(None, id="c2", name="g", arguments="{}")),
            chunk({}, "tool_calls"),
            DONE,
        ],
    )
    assert out.tool_calls == (ToolCall("c1", "f", '{"q": "a"}'), ToolCall("c2", "g", "{}"))


async def test_name_and_id_repeated_on_every_chunk(fake_openai: FakeOpenAI) -> None:
    out = await _run(
        fake_openai,
        [
            ROLE,
            *(_calls(tool_delta(0, id="c1", name="lookup", arguments=p)) for p in ['{"k', '": "v', '"}']),
            chunk({}, "tool_calls"),
            DONE,
        ],
    )
    assert out.tool_calls == (ToolCall("c1", "lookup", '{"k": "v"}'),)


async def test_usage_chunk_with_empty_choices(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        reply_raw_sse([ROLE, chunk({"content": "ok"}), chunk({}, "stop"), usage_chunk(11, 2), DONE])
    )
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    try:
        events = await events_of(provider, user_request())
    finally:
        await provider.aclose()
    assert UsageReport(11, 2) in events
    assert events[-1] == StreamEnd("stop", "fake-model")


async def test_keep_alive_comments_crlf_and_missing_blank_lines(fake_openai: FakeOpenAI) -> None:
    out = await _run(
        fake_openai,
        [
            KEEP_ALIVE,
            sse(ROLE).replace("\n", "\r\n"),
            ": still thinking\r\n\r\n",
            # two events with no blank line between them (one SSE event, two JSON lines)
            sse(chunk({"content": "Hel"})).rstrip("\n") + "\n" + sse(chunk({"content": "lo"})),
            KEEP_ALIVE,
            sse(chunk({}, "stop")),
            DONE,
        ],
    )
    assert out.text == "Hello"
    assert out.finish_reason == "stop"


async def test_error_object_inside_a_200_stream(fake_openai: FakeOpenAI) -> None:
    error = {
        "error": {
            "message": "Rate limit reached",
            "type": "rate_limit_exceeded",
            "code": "rate_limit_exceeded",
        }
    }
    with pytest.raises(ProviderRateLimited) as info:
        await _run(fake_openai, [ROLE, error])
    assert info.value.retryable
    with pytest.raises(ProviderUnavailable):
        await _run(
            fake_openai,
            [ROLE, chunk({"content": "par"}), {"error": {"code": 502, "message": "upstream died"}}],
        )
    with pytest.raises(ProviderQuotaError):
        await _run(fake_openai, [{"error": {"type": "insufficient_quota", "message": "out of credit"}}])
    with pytest.raises(ProviderError) as other:
        await _run(fake_openai, [{"error": {"type": "invalid_request_error", "message": "bad"}}])
    assert not other.value.retryable


async def test_finish_reason_stop_while_tool_calls_were_sent(fake_openai: FakeOpenAI) -> None:
    out = await _run(
        fake_openai,
        [ROLE, _calls(tool_delta(0, id="c1", name="f", arguments="{}")), chunk({}, "stop"), DONE],
    )
    assert out.tool_calls == (ToolCall("c1", "f", "{}"),)
    assert out.finish_reason == "tool_calls"


async def test_stream_cut_without_finish_or_done_is_an_error(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        await _run(fake_openai, [ROLE, chunk({"content": "half an ans"})])  # body ends cleanly, no end
    assert info.value.retryable


async def test_dropped_connection_is_an_error(fake_openai: FakeOpenAI) -> None:
    with pytest.raises(ProviderUnavailable, match="connection"):
        await _run(fake_openai, [ROLE, chunk({"content": "half"})], drop=True)


async def test_finish_without_done_is_accepted(fake_openai: FakeOpenAI) -> None:
    out = await _run(fake_openai, [ROLE, chunk({"content": "whole"}), chunk({}, "length")])
    assert (out.text, out.finish_reason) == ("whole", "length")


async def test_done_without_finish_reason_is_accepted(fake_openai: FakeOpenAI) -> None:
    out = await _run(fake_openai, [chunk({"content": "fine"}), DONE])
    assert (out.text, out.finish_reason) == ("fine", "stop")
