from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent.providers.sse import SSEEvent, iter_sse


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def _parse(*lines: str) -> list[SSEEvent]:
    return [ev async for ev in iter_sse(_lines(*lines))]


@pytest.mark.anyio
async def test_data_events_split_on_blank_lines() -> None:
    assert await _parse("data: a", "", "data: b", "") == [SSEEvent("", "a"), SSEEvent("", "b")]


@pytest.mark.anyio
async def test_comments_and_keep_alives_are_skipped() -> None:
    assert await _parse(": keep-alive", "", "data: x", ": ping", "", ":") == [SSEEvent("", "x")]


@pytest.mark.anyio
async def test_multi_line_data_is_joined_with_newlines() -> None:
    assert await _parse("data: {", 'data: "a": 1', "data: }", "") == [SSEEvent("", '{\n"a": 1\n}')]


@pytest.mark.anyio
async def test_event_names_no_space_after_colon_and_crlf_leftovers() -> None:
    got = await _parse("event: message_stop\r", 'data:{"x":1}\r', "\r", "id: 7", "retry: 10", "data: y", "")
    assert got == [SSEEvent("message_stop", '{"x":1}'), SSEEvent("", "y")]


@pytest.mark.anyio
async def test_unterminated_last_event_is_still_dispatched() -> None:
    assert await _parse("data: a", "", "data: [DONE]") == [SSEEvent("", "a"), SSEEvent("", "[DONE]")]
