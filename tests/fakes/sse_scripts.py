"""Scripted replies shared by the fake LLM servers, plus builders for raw OpenAI stream chunks.

A :class:`Reply` says *what* to answer; each fake renders it in its own wire format (streaming or
not, as the request asked). Raw replies (``reply_raw_sse``) are written byte for byte, for the odd
server variants real providers send.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: the markers the agent puts in its internal prompts; the fakes answer them sensibly by default
MEMORY_MARKER = "[hero-agent:memory-extraction]"
COMPACTION_MARKER = "[hero-agent:compaction]"
DEFAULT_SUMMARY = "Summary: the user and the assistant talked earlier; nothing else to keep."

DONE = "data: [DONE]\n\n"
KEEP_ALIVE = ": keep-alive\n\n"

RawLine = str | dict[str, Any]


@dataclass(slots=True)
class Reply:
    """One scripted answer. ``kind``: text | tools | error | raw | hang | json."""

    kind: str
    text: str = ""
    chunks: int = 3
    #: (id, name, arguments) - arguments as JSON text (OpenAI) or a dict / JSON text (Anthropic)
    calls: tuple[tuple[str, str, Any], ...] = ()
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: raw stream: dicts become ``data: {json}\n\n`` (OpenAI) or an event with that data (Anthropic,
    #: where the dict's "type" names the event); strings are written verbatim
    lines: tuple[RawLine, ...] = ()
    #: after the raw lines / the hang text: drop the connection instead of ending the body cleanly
    drop: bool = False
    #: raw stream: after the lines, stall (send nothing more) until the client leaves
    stall: bool = False
    #: seconds before the response starts; None: no extra delay
    delay: float = 0.0
    #: seconds between streamed chunks; None: the fake's ``chunk_delay``
    chunk_delay: float | None = None
    #: Anthropic only: a thinking block (text, signature) before the answer
    thinking: tuple[str, str] | None = None
    finish_reason: str | None = None
    model: str | None = None


def reply_text(
    text: str,
    chunks: int = 3,
    *,
    delay: float = 0.0,
    chunk_delay: float | None = None,
    finish_reason: str | None = None,
    model: str | None = None,
    thinking: tuple[str, str] | None = None,
) -> Reply:
    """Answer ``text``, streamed in about ``chunks`` pieces."""
    return Reply(
        "text",
        text=text,
        chunks=chunks,
        delay=delay,
        chunk_delay=chunk_delay,
        finish_reason=finish_reason,
        model=model,
        thinking=thinking,
    )


def reply_tool_calls(
    calls: Sequence[tuple[str, str, Any]],
    *,
    text: str = "",
    delay: float = 0.0,
    chunk_delay: float | None = None,
    finish_reason: str | None = None,
    thinking: tuple[str, str] | None = None,
) -> Reply:
    """Answer with tool calls ``[(id, name, arguments_json), ...]``, optionally after some text."""
    return Reply(
        "tools",
        text=text,
        calls=tuple(calls),
        delay=delay,
        chunk_delay=chunk_delay,
        finish_reason=finish_reason,
        thinking=thinking,
    )


def reply_error(
    status: int, body: Any = None, headers: dict[str, str] | None = None, *, delay: float = 0.0
) -> Reply:
    """An HTTP error. ``body`` None: the fake's default error object for that status."""
    return Reply("error", status=status, body=body, headers=dict(headers or {}), delay=delay)


def reply_quota_error() -> Reply:
    """OpenAI's 429 that is not a rate limit: the account ran out of credit."""
    return reply_error(
        429,
        {
            "error": {
                "message": "You exceeded your current quota, please check your plan and billing details.",
                "type": "insufficient_quota",
                "param": None,
                "code": "insufficient_quota",
            }
        },
    )


def reply_raw_sse(
    lines: Sequence[RawLine],
    *,
    drop: bool = False,
    stall: bool = False,
    chunk_delay: float | None = None,
    delay: float = 0.0,
) -> Reply:
    """A 200 ``text/event-stream`` made of exactly these lines (see :attr:`Reply.lines`), then the
    end of the body, a dropped connection (``drop``) or silence until the client leaves (``stall``)."""
    return Reply("raw", lines=tuple(lines), drop=drop, stall=stall, chunk_delay=chunk_delay, delay=delay)


def reply_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    """A plain JSON answer (e.g. a non-streamed completion of an unusual shape)."""
    return Reply("json", status=status, body=body, headers=dict(headers or {}))


def reply_hang(text: str = "", *, drop: bool = False) -> Reply:
    """Never answer (``text`` empty) or stream ``text`` and then stall until the client leaves."""
    return Reply("hang", text=text, drop=drop)


# -- raw OpenAI chunk builders (for reply_raw_sse) ------------------------------------------------


def chunk(
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    *,
    model: str = "fake-model",
    cid: str = "chatcmpl-fake",
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` with a single choice."""
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}],
    }


def usage_chunk(prompt_tokens: int, completion_tokens: int, *, model: str = "fake-model") -> dict[str, Any]:
    """The last chunk of ``stream_options.include_usage``: usage and ``choices: []``."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def tool_delta(
    index: int | None, *, id: str | None = None, name: str | None = None, arguments: str | None = None
) -> dict[str, Any]:
    """One ``delta.tool_calls`` item; ``None`` fields are left out (like servers that omit them)."""
    item: dict[str, Any] = {}
    if index is not None:
        item["index"] = index
    if id is not None:
        item["id"] = id
        item["type"] = "function"
    fn: dict[str, Any] = {}
    if name is not None:
        fn["name"] = name
    if arguments is not None:
        fn["arguments"] = arguments
    if fn:
        item["function"] = fn
    return item


def sse(data: Any) -> str:
    """``data: <json>\\n\\n`` for one object."""
    return f"data: {json.dumps(data)}\n\n"


def split_text(text: str, parts: int) -> list[str]:
    """``text`` cut into ``parts`` roughly equal, non-empty pieces (fewer when it is short)."""
    parts = max(1, min(parts, len(text)))
    if not text:
        return []
    size, rest = divmod(len(text), parts)
    out, pos = [], 0
    for i in range(parts):
        step = size + (1 if i < rest else 0)
        out.append(text[pos : pos + step])
        pos += step
    return out


def estimate_tokens(obj: Any) -> int:
    """A deterministic stand-in for a tokenizer: about four characters per token."""
    return max(1, len(json.dumps(obj)) // 4)
