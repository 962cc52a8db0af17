"""The Anthropic Messages API adapter, streaming over the providers' HTTP/1.1 client
(:mod:`agent.providers.h1`).

Translation (the differences the seam hides):

- the system prompt goes to the top-level ``system`` field; system-role messages inside the history
  (e.g. a compaction summary) are appended to it, since the API has no system role in ``messages``;
- tool results become user-role ``tool_result`` blocks (with ``is_error``), placed first in their
  message as the API requires;
- consecutive same-role messages are merged (the API requires alternation); a history starting with
  an assistant message gets a minimal user message in front;
- a tool call's arguments (JSON text internally) are sent as the ``input`` object; arguments that are
  not a JSON object are sent as ``{"_invalid_arguments": "<the text>"}`` so the request stays valid
  and the model can still see and correct what it wrote;
- ``thinking`` / ``redacted_thinking`` blocks are yielded as :class:`ReasoningBlock` and sent back
  unchanged, first in their assistant message (the API checks their signatures);
- empty text blocks are left out (the API rejects them).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from agent.errors import ProviderUnavailable
from agent.providers.base import (
    ChatMessage,
    ChatRequest,
    ProviderEvent,
    ReasoningBlock,
    Sampling,
    StreamEnd,
    TextChunk,
    ToolCall,
    ToolCallsReady,
    UsageReport,
    text_with_placeholders,
)
from agent.providers.http import Answer, HttpProvider, error_from_payload
from agent.providers.sse import drain, iter_sse
from config.settings import LLMSettings

ANTHROPIC_VERSION = "2023-06-01"
_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "error",
}


class AnthropicProvider(HttpProvider):
    """Messages API over the pooled client of :class:`HttpProvider`."""

    name = "anthropic"

    def __init__(self, settings: LLMSettings) -> None:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if settings.api_key:
            headers["x-api-key"] = settings.api_key
        super().__init__(settings, headers)

    def refused_parameter(self, sampling: Sampling) -> str:
        """``seed`` and a JSON ``response_format`` have no Messages API equivalent."""
        if sampling.seed is not None:
            return "seed"
        fmt = sampling.response_format
        if fmt is not None and fmt.get("type") != "text":
            return "response_format"
        return ""

    async def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]:
        async with (
            self.post_stream("messages", build_body(request)) as resp,
            aclosing(self._events(resp, request)) as events,
        ):
            async for event in events:
                yield event

    async def _events(self, resp: Answer, request: ChatRequest) -> AsyncGenerator[ProviderEvent, None]:
        blocks: dict[int, dict[str, Any]] = {}
        json_parts: dict[int, list[str]] = {}
        calls: list[ToolCall] = []
        model, stop = request.model, ""
        prompt = completion = 0
        finished = False
        async with aclosing(iter_sse(resp.aiter_bytes())) as stream:
            async for sse in stream:
                try:
                    data = json.loads(sse.data)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                kind = data.get("type") or sse.event
                if kind == "error":
                    raise error_from_payload(data.get("error"), self._secret)
                if kind == "message_start":
                    msg = data.get("message") or {}
                    model = str(msg.get("model") or model)
                    prompt, completion = _add_usage(msg.get("usage"), prompt, completion)
                elif kind == "content_block_start":
                    index, block = _index(data), dict(data.get("content_block") or {})
                    blocks[index] = block
                    json_parts[index] = []
                    if block.get("type") == "text" and block.get("text"):
                        yield TextChunk(str(block["text"]))
                elif kind == "content_block_delta":
                    index, delta = _index(data), data.get("delta") or {}
                    block = blocks.setdefault(index, {"type": "text", "text": ""})
                    dtype = delta.get("type")
                    if dtype == "text_delta" and delta.get("text"):
                        yield TextChunk(str(delta["text"]))
                    elif dtype == "input_json_delta":
                        json_parts.setdefault(index, []).append(str(delta.get("partial_json") or ""))
                    elif dtype == "thinking_delta":
                        block["thinking"] = str(block.get("thinking") or "") + str(
                            delta.get("thinking") or ""
                        )
                    elif dtype == "signature_delta":
                        block["signature"] = str(delta.get("signature") or "")
                elif kind == "content_block_stop":
                    index = _index(data)
                    block = blocks.get(index, {})
                    if block.get("type") in ("thinking", "redacted_thinking"):
                        yield ReasoningBlock(block)
                    elif block.get("type") == "tool_use":
                        calls.append(_tool_call(block, json_parts.get(index, []), len(calls)))
                elif kind == "message_delta":
                    stop = str((data.get("delta") or {}).get("stop_reason") or stop)
                    usage = data.get("usage") or {}
                    prompt = int(usage.get("input_tokens") or prompt)
                    completion = int(usage.get("output_tokens") or completion)
                elif kind == "message_stop":
                    finished = True
                    await drain(stream)
                    break
        if not finished:
            raise ProviderUnavailable(
                "the LLM provider's stream ended before the answer was complete", retryable=True
            )
        reason = _STOP.get(stop, "stop")
        if calls:
            yield ToolCallsReady(tuple(calls))
            if reason == "stop":
                reason = "tool_calls"
        yield UsageReport(prompt, completion)
        yield StreamEnd(reason, model)


def _index(data: dict[str, Any]) -> int:
    index = data.get("index")
    return index if isinstance(index, int) else 0


def _add_usage(raw: Any, prompt: int, completion: int) -> tuple[int, int]:
    if not isinstance(raw, dict):
        return prompt, completion
    # cached prompt tokens still occupy the context window
    cached = int(raw.get("cache_creation_input_tokens") or 0) + int(raw.get("cache_read_input_tokens") or 0)
    return int(raw.get("input_tokens") or 0) + cached, int(raw.get("output_tokens") or completion)


def _tool_call(block: dict[str, Any], parts: list[str], n: int) -> ToolCall:
    text = "".join(parts)
    if not text:
        text = json.dumps(block.get("input") or {})
    return ToolCall(
        id=str(block.get("id") or f"toolu_{n}"), name=str(block.get("name") or ""), arguments=text
    )


def build_body(request: ChatRequest) -> dict[str, Any]:
    """The Messages API request for ``request`` (always streamed)."""
    system = [request.system] if request.system else []
    turns: list[dict[str, Any]] = []
    for msg in request.messages:
        if msg.role == "system":
            if msg.content:
                system.append(msg.content)
            continue
        role, content = _blocks(msg)
        if not content:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(content)
        else:
            turns.append({"role": role, "content": content})
    for turn in turns:
        if turn["role"] == "user":  # tool results must open their message
            turn["content"].sort(key=lambda b: b.get("type") != "tool_result")
    if turns and turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": "(continued)"}]})
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": turns,
        "stream": True,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
    body.update(_sampling(request))
    return body


def _sampling(request: ChatRequest) -> dict[str, Any]:
    """The nearest Messages API equivalents of a client's OpenAI parameters: ``stop`` ->
    ``stop_sequences``, ``top_p``, ``tool_choice`` (auto / any / tool / none) with
    ``parallel_tool_calls: false`` -> ``disable_parallel_tool_use``. ``seed`` and a JSON
    ``response_format`` have none: :meth:`AnthropicProvider.refused_parameter` names them first."""
    s = request.sampling
    out: dict[str, Any] = {}
    if s.stop:
        out["stop_sequences"] = list(s.stop)
    if s.top_p is not None:
        out["top_p"] = s.top_p
    if request.tools and (s.tool_choice is not None or s.parallel_tool_calls is False):
        choice = _tool_choice(s.tool_choice)
        if s.parallel_tool_calls is False and choice.get("type") != "none":
            choice["disable_parallel_tool_use"] = True
        out["tool_choice"] = choice
    return out


def _tool_choice(choice: str | dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        return {"type": "tool", "name": str(name)} if name else {"type": "auto"}
    return {"type": {"required": "any", "none": "none"}.get(choice or "auto", "auto")}


def _blocks(msg: ChatMessage) -> tuple[str, list[dict[str, Any]]]:
    if msg.role == "tool":
        result: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": msg.tool_call_id,
            "content": msg.content,
        }
        if msg.is_error:
            result["is_error"] = True
        return "user", [result]
    if msg.role == "assistant":
        content = [dict(b) for b in msg.reasoning]
        if msg.content:
            content.append({"type": "text", "text": msg.content})
        content += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c.arguments)}
            for c in msg.tool_calls
        ]
        return "assistant", content
    blocks: list[dict[str, Any]] = [
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": img.mime,
                "data": base64.b64encode(img.data).decode("ascii"),
            },
        }
        for img in msg.images
        if img.data
    ]
    text = text_with_placeholders(msg)
    if text:
        blocks.append({"type": "text", "text": text})
    return "user", blocks


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"_invalid_arguments": arguments}
