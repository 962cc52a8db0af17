"""One socket write per request (agent/providers/wire.py), against FakeOpenAI over real HTTP."""

from __future__ import annotations

import pytest

from agent.metrics import TurnMetrics
from agent.providers.base import ChatMessage, TextChunk
from agent.providers.openai import OpenAIProvider
from agent.providers.wire import MAX_HELD_BYTES, WIRE_STATS
from tests.agent.providers.conftest import events_of, fast_settings, user_request
from tests.fakes.openai_server import FakeOpenAI, reply_text

pytestmark = pytest.mark.anyio


async def test_each_request_takes_one_socket_write_on_a_reused_connection(fake_openai: FakeOpenAI) -> None:
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    requests, writes = WIRE_STATS.requests, WIRE_STATS.socket_writes
    try:
        for i in range(3):
            fake_openai.enqueue(reply_text(f"answer {i}", chunks=2))
            events = await events_of(provider, user_request(f"question {i} " * 500))
            assert "".join(e.text for e in events if isinstance(e, TextChunk)) == f"answer {i}"
    finally:
        await provider.aclose()
    # httpcore writes the header block and the body separately: here they went out together
    assert WIRE_STATS.requests - requests == 3
    assert WIRE_STATS.socket_writes - writes == 3
    # the whole request arrived (headers and the body the server parsed)
    assert [b["messages"][-1]["content"] for b in fake_openai.requests] == [
        f"question {i} " * 500 for i in range(3)
    ]
    assert len({e["peer"] for e in fake_openai.exchanges}) == 1  # one kept-alive connection


async def test_a_request_bigger_than_the_hold_still_arrives_whole(fake_openai: FakeOpenAI) -> None:
    big = "x" * (MAX_HELD_BYTES + 1000)
    fake_openai.enqueue(reply_text("ok"))
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    try:
        events = await events_of(provider, user_request(messages=(ChatMessage("user", big),)))
    finally:
        await provider.aclose()
    assert "".join(e.text for e in events if isinstance(e, TextChunk)) == "ok"
    assert fake_openai.requests[0]["messages"][-1]["content"] == big


async def test_the_write_counters_are_in_metrics(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(reply_text("ok"))
    provider = OpenAIProvider(fast_settings(fake_openai.base_url))
    try:
        await events_of(provider, user_request())
    finally:
        await provider.aclose()
    text = "\n".join(TurnMetrics().render_lines())
    assert f"hero_provider_requests_total {WIRE_STATS.requests}" in text
    assert f"hero_provider_socket_writes_total {WIRE_STATS.socket_writes}" in text
    assert WIRE_STATS.requests >= 1
