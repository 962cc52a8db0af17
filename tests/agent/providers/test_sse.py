from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent.providers.sse import SSEEvent, iter_sse


async def _chunks(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _parse(*lines: str) -> list[SSEEvent]:
    """The lines, each ended by LF, as one body; the parse must not depend on how it is read, so
    it is also fed in reads of 1, 2, 3 and 7 bytes and must give the same events each time."""
    body = "".join(f"{line}\n" for line in lines).encode()
    if lines and lines[-1] == "data: [DONE]":
        body = body[:-1]  # an unterminated last line
    whole = [ev async for ev in iter_sse(_chunks(body))]
    for size in (1, 2, 3, 7):
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        assert [ev async for ev in iter_sse(_chunks(*pieces))] == whole, size
    return whole


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


@pytest.mark.anyio
async def test_crlf_split_between_reads_is_one_line_end() -> None:
    # a CR ending one read and its LF starting the next must not make a blank line (an early dispatch)
    got = [ev async for ev in iter_sse(_chunks(b"data: a\r", b"\ndata: b\r\n\r\n"))]
    assert got == [SSEEvent("", "a\nb")]


@pytest.mark.anyio
async def test_lone_cr_line_ends_and_utf8_split_across_reads() -> None:
    text = "caf\u00e9 \u2603".encode()
    got = [ev async for ev in iter_sse(_chunks(b"data: " + text[:4], text[4:] + b"\r\r"))]
    assert got == [SSEEvent("", "caf\u00e9 \u2603")]
