"""A tolerant Server-Sent Events parser (the subset LLM APIs use), reading the body's raw bytes.

Handles what real servers send: ``: keep-alive`` comment lines, ``data:`` with or without the space,
multi-line data, LF, CRLF and lone CR line ends (also split across network reads), ``event:`` names,
and a last event the server forgot to terminate with a blank line (dispatched at end of stream).

Why bytes: httpx's ``aiter_lines`` decodes every chunk to text and splits it again in pure Python;
per streamed token that cost more than the rest of the adapter. Here the chunk is split with
``bytes.splitlines`` (C) and only a ``data:`` line's value is decoded, whole, so a UTF-8 character
split across two reads is never cut.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable
from contextlib import aclosing
from dataclasses import dataclass

import anyio

#: how long to keep reading after the final event so the connection can go back to the pool
DRAIN_TIMEOUT_S = 0.25


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its ``event:`` name ("" when absent) and its data lines joined by "\\n"."""

    event: str
    data: str


async def iter_sse(chunks: AsyncIterable[bytes]) -> AsyncGenerator[SSEEvent, None]:
    """Turn the body's bytes (in chunks of any size) into events; comments and retry/id fields are
    skipped."""
    async with aclosing(iter_sse_reads(chunks)) as reads:
        async for events in reads:
            for event in events:
                yield event


async def iter_sse_reads(chunks: AsyncIterable[bytes]) -> AsyncGenerator[list[SSEEvent], None]:
    """:func:`iter_sse`, one list per network read: the events completed by that read (none are left
    out; reads that complete no event give nothing). A reader that falls behind finds several events
    in one read and can handle them as one (a provider joins their text into one chunk)."""
    name = ""
    data: list[str] = []
    pending = b""
    #: the last read ended in CR: a LF starting the next read is the rest of that CRLF
    skip_lf = False
    async for read in chunks:
        chunk = read[1:] if skip_lf and read.startswith(b"\n") else read
        skip_lf = False
        buf = pending + chunk if pending else chunk
        if not buf:
            continue
        lines = buf.splitlines()
        if buf.endswith((b"\n", b"\r")):
            pending = b""
            skip_lf = buf.endswith(b"\r")
        else:
            pending = lines.pop()  # no line end yet: the rest of it comes with the next read
        done: list[SSEEvent] = []
        for line in lines:
            if not line:
                if data:
                    done.append(SSEEvent(name, "\n".join(data)))
                name, data = "", []
            elif not line.startswith(b":"):  # a comment / keep-alive otherwise
                field, _, value = line.partition(b":")
                if field == b"data":
                    data.append(_text(value))
                elif field == b"event":
                    name = _text(value)
        if done:
            yield done
    for line in pending.splitlines():  # a last line without its line end
        field, _, value = line.partition(b":")
        if field == b"data":
            data.append(_text(value))
    if data:
        yield [SSEEvent(name, "\n".join(data))]


def _text(value: bytes) -> str:
    return (value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace")


async def drain(events: AsyncGenerator[object, None], limit_s: float = DRAIN_TIMEOUT_S) -> None:
    """Read what follows the final event (normally just the end of the body): httpx only reuses a
    connection whose body was read to the end. A server that keeps the body open is cut off."""
    with anyio.move_on_after(limit_s):
        async for _ in events:
            pass
