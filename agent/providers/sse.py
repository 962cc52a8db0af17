"""A tolerant Server-Sent Events parser (the subset LLM APIs use).

Handles what real servers send: ``: keep-alive`` comment lines, ``data:`` with or without the space,
multi-line data, CRLF line ends (httpx's ``aiter_lines`` splits on CR, LF and CRLF), ``event:`` names,
and a last event the server forgot to terminate with a blank line (dispatched at end of stream).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass

import anyio

#: how long to keep reading after the final event so the connection can go back to the pool
DRAIN_TIMEOUT_S = 0.25


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its ``event:`` name ("" when absent) and its data lines joined by "\\n"."""

    event: str
    data: str


async def iter_sse(lines: AsyncIterable[str]) -> AsyncGenerator[SSEEvent, None]:
    """Turn lines (without their line ends) into events; comments and retry/id fields are skipped."""
    name = ""
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SSEEvent(name, "\n".join(data))
            name, data = "", []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    if data:
        yield SSEEvent(name, "\n".join(data))


async def drain(events: AsyncGenerator[SSEEvent, None], limit_s: float = DRAIN_TIMEOUT_S) -> None:
    """Read what follows the final event (normally just the end of the body): httpx only reuses a
    connection whose body was read to the end. A server that keeps the body open is cut off."""
    with anyio.move_on_after(limit_s):
        async for _ in events:
            pass
