"""The OpenAI-compatible Chat Completions adapter (OpenAI, OpenRouter, Groq, vLLM, Ollama, llama.cpp,
LM Studio...), streaming over the providers' HTTP/1.1 client (:mod:`agent.providers.h1`).

Stream quirks handled (each has a test in ``tests/agent/providers/test_openai_variants.py``): the tool
call variants of :mod:`agent.providers.toolcalls`; a last usage chunk with ``choices: []``; keep-alive
comments; an ``{"error": ...}`` object inside a 200 stream (mapped like an HTTP error);
``finish_reason: "stop"`` while tool calls were sent (reported as ``tool_calls``); several JSON objects
run together without blank lines. A stream that ends before both its ``finish_reason`` and ``[DONE]``
raises :class:`~agent.errors.ProviderUnavailable`: a cut answer is never passed off as a whole one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import orjson
import structlog

from agent.errors import ProviderError, ProviderUnavailable
from agent.providers.base import (
    TEXT_STATS,
    ChatMessage,
    ChatRequest,
    ProviderEvent,
    StreamEnd,
    TextChunk,
    ToolCallsReady,
    ToolSpec,
    UsageReport,
    text_with_placeholders,
)
from agent.providers.http import Answer, HttpProvider, error_from_payload
from agent.providers.sse import drain, iter_sse_reads
from agent.providers.toolcalls import ToolCallAssembler
from config.settings import LLMSettings

log = structlog.get_logger()

_FINISH = {
    "stop": "stop",
    "eos": "stop",
    "end_turn": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "tool_use": "tool_calls",
    "length": "length",
    "max_tokens": "length",
    "content_filter": "error",
    "error": "error",
}


class OpenAIProvider(HttpProvider):
    """Chat Completions over the pooled client of :class:`HttpProvider`."""

    name = "openai"

    def __init__(self, settings: LLMSettings) -> None:
        headers = {"authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        super().__init__(settings, headers)
        self._tokens_key = "max_tokens"

    async def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]:
        body = encode_body(request, completion_tokens_key=self._tokens_key)
        try:
            async with aclosing(self._post(body, request)) as events:
                async for event in events:
                    yield event
        except ProviderError as exc:
            # OpenAI's reasoning models refuse "max_tokens" (which every other server expects) with
            # a 400 naming "max_completion_tokens": switch once and remember it for this server.
            if (
                exc.status != 400
                or "max_completion_tokens" not in str(exc)
                or self._tokens_key != "max_tokens"
            ):
                raise
            self._tokens_key = "max_completion_tokens"
            log.info("provider.max_tokens_renamed", provider="openai", model=request.model)
            body = encode_body(request, completion_tokens_key=self._tokens_key)
            async with aclosing(self._post(body, request)) as events:
                async for event in events:
                    yield event

    async def _post(self, body: bytes, request: ChatRequest) -> AsyncGenerator[ProviderEvent, None]:
        async with (
            self.post_stream("chat/completions", body) as resp,
            aclosing(self._events(resp, request)) as events,
        ):
            async for event in events:
                yield event

    async def _events(self, resp: Answer, request: ChatRequest) -> AsyncGenerator[ProviderEvent, None]:
        calls = ToolCallAssembler()
        finish: str | None = None
        usage: UsageReport | None = None
        model = request.model
        done = False
        async with aclosing(iter_sse_reads(resp.aiter_bytes())) as stream:
            async for read in stream:
                # the text of every event of one network read goes out as ONE chunk: a reader that
                # fell behind (several events waiting) catches up with one event downstream, not many
                texts: list[str] = []
                for sse in read:
                    for obj in _json_objects(sse.data):
                        if obj.get("error"):
                            if texts:
                                yield TextChunk("".join(texts))
                            raise error_from_payload(obj["error"], self._secret)
                        model = str(obj.get("model") or model)
                        usage = _usage(obj) or usage
                        for choice in _list(obj.get("choices")):
                            delta = choice.get("delta") or choice.get("message") or {}
                            if not isinstance(delta, dict):
                                continue
                            text = delta.get("content")
                            if isinstance(text, str) and text:
                                texts.append(text)
                            if delta.get("tool_calls"):
                                calls.add(delta["tool_calls"])
                            if isinstance(choice.get("finish_reason"), str):
                                finish = choice["finish_reason"]
                    if any(line.strip() == "[DONE]" for line in sse.data.split("\n")):
                        done = True
                        break
                if texts:
                    TEXT_STATS.handed_on(len(texts))
                    yield TextChunk(texts[0] if len(texts) == 1 else "".join(texts))
                if done:
                    await drain(stream)
                    break
        if not done and finish is None:
            raise ProviderUnavailable(
                "the LLM provider's stream ended before the answer was complete", retryable=True
            )
        assembled = calls.calls()
        reason = _FINISH.get(finish or "stop", "stop")
        if assembled:
            yield ToolCallsReady(assembled)
            if reason == "stop":
                reason = "tool_calls"  # servers that say "stop" after sending calls
        if usage is not None:
            yield usage
        yield StreamEnd(reason, model)


def build_body(request: ChatRequest, *, completion_tokens_key: str = "max_tokens") -> dict[str, Any]:
    """The Chat Completions request for ``request`` (always streamed, usage requested)."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.extend(_message(m) for m in request.messages)
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        completion_tokens_key: request.max_tokens,
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.tools:
        body["tools"] = [_tool(t) for t in request.tools]
    body.update(_sampling(request))
    return body


def encode_body(request: ChatRequest, *, completion_tokens_key: str = "max_tokens") -> bytes:
    """:func:`build_body` as the JSON bytes sent, with each message's JSON taken from its memo
    (:attr:`ChatMessage.wire`): a window of 200 messages seen turn after turn is encoded once."""
    body = build_body(replace(request, messages=()), completion_tokens_key=completion_tokens_key)
    parts = [_dumps(m) for m in body.pop("messages")]  # the system message
    # the memo read inline (a call per message of a 200-message window costs more than the join)
    name = OpenAIProvider.name
    parts += [m.wire[1] if m.wire[0] == name else message_json(m) for m in request.messages]
    tools = b""
    if body.pop("tools", None):  # the same specs every turn: their JSON is memoed like a message's
        tools = b'"tools":[' + b",".join(tool_json(t) for t in request.tools) + b"],"
    rest = _dumps(body)
    return b'{"messages":[' + b",".join(parts) + b"]," + tools + rest[1:]


def message_json(msg: ChatMessage) -> bytes:
    """One message's request JSON, encoded once per message and kept with it; a message carrying
    image bytes is encoded each time (its bytes are loaded for one request only)."""
    name, data = msg.wire
    if name == OpenAIProvider.name:
        return data
    data = _dumps(_message(msg))
    if not any(img.data for img in msg.images):
        object.__setattr__(msg, "wire", (OpenAIProvider.name, data))  # a memo on a frozen value
    return data


def tool_json(tool: ToolSpec) -> bytes:
    """One tool's request JSON, encoded once per spec and kept with it."""
    name, data = tool.wire
    if name == OpenAIProvider.name:
        return data
    data = _dumps(_tool(tool))
    object.__setattr__(tool, "wire", (OpenAIProvider.name, data))  # a memo on a frozen value
    return data


def _tool(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def _dumps(value: Any) -> bytes:
    """JSON as httpx encodes a ``json=`` body (UTF-8, compact, no NaN)."""
    # json, not orjson: orjson's bytes keep a 4 KiB allocation whatever their length, and a message's
    # JSON is kept with it in the window cache (docs/performance.md, "Records' JSON through orjson")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _sampling(request: ChatRequest) -> dict[str, Any]:
    """A client's parameters, as the Chat Completions API names them (tool ones only with tools)."""
    s = request.sampling
    out: dict[str, Any] = {}
    if s.stop:
        out["stop"] = list(s.stop)
    if s.top_p is not None:
        out["top_p"] = s.top_p
    if s.seed is not None:
        out["seed"] = s.seed
    if s.response_format is not None:
        out["response_format"] = s.response_format
    if request.tools and s.tool_choice is not None:
        out["tool_choice"] = s.tool_choice
    if request.tools and s.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = s.parallel_tool_calls
    return out


def _message(msg: ChatMessage) -> dict[str, Any]:
    if msg.role == "tool":
        return {"role": "tool", "tool_call_id": msg.tool_call_id, "content": msg.content}
    if msg.role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": msg.content}
        if msg.tool_calls:
            # null content next to tool calls: some servers reject "" there
            out["content"] = msg.content or None
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in msg.tool_calls
            ]
        return out
    # reasoning blocks are Anthropic's; Chat Completions has nowhere to send them back
    if any(img.data for img in msg.images):
        parts: list[dict[str, Any]] = []
        text = text_with_placeholders(msg)
        if text:
            parts.append({"type": "text", "text": text})
        parts += [
            {"type": "image_url", "image_url": {"url": f"data:{img.mime};base64,{_b64(img.data)}"}}
            for img in msg.images
            if img.data
        ]
        return {"role": msg.role, "content": parts}
    return {"role": msg.role, "content": text_with_placeholders(msg)}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _json_objects(data: str) -> list[dict[str, Any]]:
    """The JSON object(s) of one event; servers that omit the blank line between events put several
    ``data:`` lines into one, which the SSE rules join with newlines."""
    if data.strip() == "[DONE]":
        return []
    try:
        parsed = orjson.loads(data)  # per streamed chunk: ~3.5x faster than json's
    except ValueError:
        parsed = _lenient_json(data)
    if parsed is _UNPARSED:
        if "\n" in data:
            return [o for line in data.split("\n") for o in _json_objects(line)]
        log.warning("provider.bad_chunk", provider="openai", size=len(data))
    return [parsed] if isinstance(parsed, dict) else []


_UNPARSED = object()


def _lenient_json(data: str) -> Any:
    """What ``json`` accepts beyond orjson (NaN, integers past 64 bits), or ``_UNPARSED``."""
    try:
        return json.loads(data)
    except ValueError:
        return _UNPARSED


def _list(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _usage(obj: dict[str, Any]) -> UsageReport | None:
    """Usage of a chunk: top-level (OpenAI and most servers) or under ``x_groq`` (Groq)."""
    raw = obj.get("usage")
    if not isinstance(raw, dict):
        extra = obj.get("x_groq")
        raw = extra.get("usage") if isinstance(extra, dict) else None
    if not isinstance(raw, dict):
        return None
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return UsageReport(prompt, completion)
