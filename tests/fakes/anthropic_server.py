"""``FakeAnthropic``: a real Anthropic Messages API server (``POST /v1/messages``) on 127.0.0.1.

Same shape as :class:`~tests.fakes.openai_server.FakeOpenAI`::

    async with FakeAnthropic() as fake:
        fake.enqueue(reply_text("Hi", thinking=("let me think", "sig-1")))
        fake.enqueue(reply_tool_use([("toolu_1", "get_time", {"tz": "UTC"})]))
        fake.enqueue(reply_raw_events([{"type": "error", "error": {...}}]))

Streams use the real event sequence: message_start, content_block_start/delta/stop (text_delta,
thinking_delta + signature_delta, input_json_delta), message_delta (stop_reason, usage), message_stop.
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.base import DropConnection, FakeLLMServer, content_text
from tests.fakes.sse_scripts import (
    RawLine,
    Reply,
    estimate_tokens,
    reply_error,
    reply_hang,
    reply_json,
    reply_text,
    reply_tool_calls,
    split_text,
)

__all__ = [
    "FakeAnthropic",
    "event",
    "reply_error",
    "reply_hang",
    "reply_json",
    "reply_raw_events",
    "reply_text",
    "reply_tool_use",
]


def reply_tool_use(
    calls: Sequence[tuple[str, str, Any]],
    *,
    text: str = "",
    thinking: tuple[str, str] | None = None,
    chunk_delay: float | None = None,
) -> Reply:
    """Answer with ``tool_use`` blocks ``[(id, name, input dict or JSON text), ...]``."""
    return reply_tool_calls(calls, text=text, thinking=thinking, chunk_delay=chunk_delay)


def reply_raw_events(
    events: Sequence[RawLine], *, drop: bool = False, stall: bool = False, chunk_delay: float | None = None
) -> Reply:
    """A 200 event stream of exactly these events (dicts: named by their "type"; strings: verbatim),
    then the end of the body, a dropped connection (``drop``) or silence (``stall``)."""
    return Reply("raw", lines=tuple(events), drop=drop, stall=stall, chunk_delay=chunk_delay)


def event(data: dict[str, Any]) -> str:
    """One SSE event, named after ``data["type"]`` as the real API does."""
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class FakeAnthropic(FakeLLMServer):
    """A scripted ``/v1/messages`` server speaking the Anthropic wire format. Image blocks are checked
    as the real API does (base64 source of a supported type); ``blind`` refuses them like a model
    without vision."""

    blind = False

    def image_blocks(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            block
            for m in body.get("messages") or []
            if isinstance(m.get("content"), list)
            for block in m["content"]
            if isinstance(block, dict) and block.get("type") == "image"
        ]

    def system_text(self, body: dict[str, Any]) -> str:
        return content_text(body.get("system"))

    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    async def _models(self, request: Request) -> Response:
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return _error(401, "invalid x-api-key")
        data = [{"id": m, "type": "model", "display_name": m} for m in self.models]
        return JSONResponse({"data": data, "has_more": False})

    async def _messages(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "invalid JSON body")
        headers = self.record(body, request)
        if self.api_key is not None and headers.get("x-api-key") != self.api_key:
            return _error(401, "invalid x-api-key")
        images = self.image_blocks(body)
        if images and self.blind:
            return _error(400, "this model does not support image input")
        if any(not image_block_ok(b) for b in images):
            return _error(400, "messages: invalid image block")
        reply = self.next_reply(body)
        if reply.delay:
            await self.pause(reply.delay, request)
        model = reply.model or body.get("model") or "fake-model"
        if reply.kind == "error":
            if reply.body is not None:
                content = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                return Response(content, reply.status, reply.headers, media_type="application/json")
            return _error(reply.status, f"fake error {reply.status}", reply.headers)
        if reply.kind == "json":
            return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)
        if reply.kind == "hang" and not reply.text:
            await self.stall(request)
            return Response(status_code=503)
        if reply.kind == "raw" or reply.kind == "hang" or body.get("stream"):
            stream = self._stream(request, reply, body, model)
            return StreamingResponse(stream, media_type="text/event-stream")
        return JSONResponse(_message(reply, body, model))

    async def _stream(
        self, request: Request, reply: Reply, body: dict[str, Any], model: str
    ) -> AsyncIterator[str]:
        gap = self.delay_for(reply)
        if reply.kind == "raw":
            pieces = [line if isinstance(line, str) else event(line) for line in reply.lines]
        else:
            pieces = [event(e) for e in _events(reply, body, model)]
        for i, piece in enumerate(pieces):
            if i and gap:
                await self.pause(gap)
            yield piece
        if reply.kind == "hang" or reply.stall:
            await self.stall(request)
        if reply.drop:
            raise DropConnection("scripted connection drop")


def image_block_ok(block: dict[str, Any]) -> bool:
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64":
        return False
    if source.get("media_type") not in ("image/png", "image/jpeg", "image/gif", "image/webp"):
        return False
    try:
        return bool(base64.b64decode(str(source.get("data")), validate=True))
    except ValueError:
        return False


def _blocks(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.thinking is not None:
        blocks.append({"type": "thinking", "thinking": reply.thinking[0], "signature": reply.thinking[1]})
    if reply.text:
        blocks.append({"type": "text", "text": reply.text})
    for cid, name, args in reply.calls:
        blocks.append({"type": "tool_use", "id": cid, "name": name, "input": _input(args)})
    return blocks


def _events(reply: Reply, body: dict[str, Any], model: str) -> list[dict[str, Any]]:
    prompt, completion = _usage(reply, body)
    start = _message(reply, body, model) | {"content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": prompt, "output_tokens": 1}
    out: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, block in enumerate(_blocks(reply)):
        out += _block_events(index, block, reply.chunks)
    if reply.kind == "hang":
        return out[:-1]  # the last block never stops
    out.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": _stop(reply), "stop_sequence": None},
            "usage": {"output_tokens": completion},
        }
    )
    out.append({"type": "message_stop"})
    return out


def _block_events(index: int, block: dict[str, Any], chunks: int) -> list[dict[str, Any]]:
    kind = block["type"]
    if kind == "text":
        empty: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in split_text(block["text"], chunks)]
    elif kind == "thinking":
        empty = {"type": "thinking", "thinking": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in split_text(block["thinking"], 2)]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    else:
        empty = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        text = json.dumps(block["input"])
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in split_text(text, 3)]
    return [
        {"type": "content_block_start", "index": index, "content_block": empty},
        *({"type": "content_block_delta", "index": index, "delta": d} for d in deltas),
        {"type": "content_block_stop", "index": index},
    ]


def _message(reply: Reply, body: dict[str, Any], model: str) -> dict[str, Any]:
    prompt, completion = _usage(reply, body)
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _blocks(reply),
        "stop_reason": _stop(reply),
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": completion},
    }


def _stop(reply: Reply) -> str:
    return reply.finish_reason or ("tool_use" if reply.calls else "end_turn")


def _usage(reply: Reply, body: dict[str, Any]) -> tuple[int, int]:
    completion = max(1, len(split_text(reply.text, reply.chunks))) + 5 * len(reply.calls)
    return estimate_tokens([body.get("system"), body.get("messages")]), completion


def _input(args: Any) -> Any:
    return json.loads(args) if isinstance(args, str) else args


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    err = {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}
    return JSONResponse({"type": "error", "error": err}, status_code=status, headers=headers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake Anthropic Messages API server on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=None, help="chunks in each default answer")
    args = parser.parse_args(argv)
    # nobody in another process can read the request bodies: none kept (a long bench's memory)
    fake = FakeAnthropic(chunk_delay=args.chunk_delay, tokens=args.tokens, keep_requests=False)
    anyio.run(fake.serve_forever, args.port)


if __name__ == "__main__":
    main()
