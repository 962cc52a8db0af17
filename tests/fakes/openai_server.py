"""``FakeOpenAI``: a real OpenAI-compatible Chat Completions server on 127.0.0.1 for tests and benches.

::

    async with FakeOpenAI() as fake:                 # uvicorn in the current event loop
        fake.enqueue(reply_text("Hello there", chunks=3))
        ... point a client at fake.base_url ...
        fake.requests[-1]["model"]
    with FakeOpenAI().running_in_thread() as fake:   # its own loop in a thread
        run_a_subprocess_against(fake.base_url)

    python -m tests.fakes.openai_server --port P [--chunk-delay S] [--tokens N]   # prints READY <url>

With nothing scripted it streams ``echo: <last user message>``; prompts carrying the agent's
memory-extraction marker get ``{"memories": []}`` and compaction prompts a short summary.

Audio: ``POST /v1/audio/transcriptions`` (multipart, as OpenAI's) answers ``verbose_json`` with
``transcript`` and ``transcript_duration`` (or ``audio_status`` as an error); ``POST /v1/audio/speech``
answers Ogg bytes. Both record what they got in ``audio_requests`` (fields, file name, type, bytes).

Own time: every chat exchange is timed from the app receiving the request to the server taking its
last byte, and kept in ``exchanges`` (``GET /v1/_fake/exchanges`` answers them as JSON, for a fake in
another process): a bench subtracts exactly the fake's time from a turn's wall time. A response
header cannot carry it (the headers leave before the last byte).
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.fakes.base import DropConnection, FakeLLMServer, content_text
from tests.fakes.sse_scripts import (
    DONE,
    Reply,
    chunk,
    estimate_tokens,
    reply_error,
    reply_hang,
    reply_json,
    reply_quota_error,
    reply_raw_sse,
    reply_text,
    reply_tool_calls,
    split_text,
    sse,
    tool_delta,
    usage_chunk,
)

__all__ = [
    "FakeOpenAI",
    "reply_error",
    "reply_hang",
    "reply_json",
    "reply_quota_error",
    "reply_raw_sse",
    "reply_text",
    "reply_tool_calls",
]


#: what the fake's speech endpoint answers: the start of an Ogg stream (enough for a voice note)
FAKE_OGG = b"OggS\x00\x02" + b"\x00" * 20 + b"OpusHead fake opus audio"


class FakeOpenAI(FakeLLMServer):
    """A scripted ``/v1/chat/completions`` + ``/v1/models`` + ``/v1/audio/*`` server speaking the real
    wire format."""

    #: what a transcription answers; ``audio_status`` set: answer that HTTP error instead
    transcript = "hello from a voice note"
    transcript_duration = 1.5
    audio_status: int | None = None
    #: the speech endpoint alone answers this HTTP error (transcription keeps working)
    speech_status: int | None = None
    #: refuse requests with images, like a model without vision
    blind = False

    @property
    def audio_requests(self) -> list[dict[str, Any]]:
        if not hasattr(self, "_audio_requests"):
            self._audio_requests: list[dict[str, Any]] = []
        return self._audio_requests

    def image_urls(self, body: dict[str, Any]) -> list[str]:
        """The ``image_url`` parts of every message of a recorded chat request."""
        return [
            str(part["image_url"]["url"])
            for m in body.get("messages") or []
            if isinstance(m.get("content"), list)
            for part in m["content"]
            if isinstance(part, dict) and part.get("type") == "image_url"
        ]

    def system_text(self, body: dict[str, Any]) -> str:
        return "\n".join(
            content_text(m.get("content"))
            for m in body.get("messages") or []
            if m.get("role") in ("system", "developer")
        )

    @property
    def exchanges(self) -> list[dict[str, Any]]:
        """One entry per chat exchange, in the order they ended: ``user`` (the last user text),
        ``peer`` (client "host:port") and ``ms`` (the fake's own wall time, see the module docstring)."""
        if not hasattr(self, "_exchanges"):
            self._exchanges: list[dict[str, Any]] = []
        return self._exchanges

    def build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._completions, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/audio/transcriptions", self._transcriptions, methods=["POST"]),
                Route("/v1/audio/speech", self._speech, methods=["POST"]),
                Route("/v1/_fake/exchanges", self._exchanges_route, methods=["GET"]),
            ],
            middleware=[Middleware(_ExchangeClock, exchanges=self.exchanges)],
        )

    async def _exchanges_route(self, request: Request) -> Response:
        return JSONResponse(self.exchanges)

    async def _models(self, request: Request) -> Response:
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error")
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return JSONResponse({"object": "list", "data": data})

    async def _transcriptions(self, request: Request) -> Response:
        form = await request.form()
        upload = form.get("file")
        record: dict[str, Any] = {
            "endpoint": "transcriptions",
            "fields": {k: v for k, v in form.items() if isinstance(v, str)},
            "authorization": request.headers.get("authorization"),
        }
        if upload is not None and not isinstance(upload, str):
            record |= {"filename": upload.filename, "type": upload.content_type, "data": await upload.read()}
        await form.close()
        self.audio_requests.append(record)
        if self.audio_status is not None:
            return _error(self.audio_status, "the audio service failed", "server_error")
        return JSONResponse(
            {
                "task": "transcribe",
                "language": "english",
                "duration": self.transcript_duration,
                "text": self.transcript,
            }
        )

    async def _speech(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.audio_requests.append({"endpoint": "speech", "body": body})
        status = self.speech_status or self.audio_status
        if status is not None:
            return _error(status, "the audio service failed", "server_error")
        return Response(FAKE_OGG, media_type="audio/ogg")

    async def _completions(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "invalid JSON body", "invalid_request_error")
        headers = self.record(body, request)
        request.state.user_text = self.last_user_text(body)
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            # Like the real API, the message quotes the key it got: clients must not echo it.
            got = headers.get("authorization", "").removeprefix("Bearer ")
            return _error(401, f"Incorrect API key provided: {got}.", "invalid_request_error")
        images = self.image_urls(body)
        if images and self.blind:
            return _error(
                400,
                "Invalid content type. image_url is only supported by certain models.",
                "invalid_request_error",
            )
        if any(not _data_url_ok(url) for url in images):
            return _error(400, "Invalid image data.", "invalid_request_error")
        reply = self.next_reply(body)
        if reply.delay:
            await self.pause(reply.delay, request)
        model = reply.model or body.get("model") or "fake-model"
        if reply.kind == "error":
            return _error_reply(reply)
        if reply.kind == "json":
            return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)
        if reply.kind == "hang" and not reply.text:
            await self.stall(request)
            return Response(status_code=503)
        stream = bool(body.get("stream"))
        if reply.kind == "raw" or stream or reply.kind == "hang":
            return StreamingResponse(
                self._stream(request, reply, body, model), media_type="text/event-stream"
            )
        return JSONResponse(_completion(reply, body, model))

    async def _stream(
        self, request: Request, reply: Reply, body: dict[str, Any], model: str
    ) -> AsyncIterator[str]:
        gap = self.delay_for(reply)
        first = True
        for piece in _stream_pieces(reply, body, model):
            if not first and gap:
                await self.pause(gap)
            first = False
            yield piece
        if reply.kind == "hang" or reply.stall:
            await self.stall(request)
        if reply.drop:
            raise DropConnection("scripted connection drop")


class _ExchangeClock:
    """ASGI middleware timing each chat exchange from the app's first look at the request to the
    server taking the last body message (the chunked end of the stream included)."""

    def __init__(self, app: ASGIApp, exchanges: list[dict[str, Any]]) -> None:
        self.app = app
        self.exchanges = exchanges

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                client = scope.get("client") or ("", 0)
                self.exchanges.append(
                    {
                        "user": scope.get("state", {}).get("user_text", ""),
                        "peer": f"{client[0]}:{client[1]}",
                        "ms": (time.perf_counter() - started) * 1000,
                    }
                )

        await self.app(scope, receive, timed_send)


def _data_url_ok(url: str) -> bool:
    head, _, data = url.partition(",")
    if not head.startswith("data:image/") or not head.endswith(";base64"):
        return False
    try:
        return bool(base64.b64decode(data, validate=True))
    except ValueError:
        return False


def _stream_pieces(reply: Reply, body: dict[str, Any], model: str) -> list[str]:
    if reply.kind == "raw":
        return [line if isinstance(line, str) else sse(line) for line in reply.lines]
    out = [sse(chunk({"role": "assistant", "content": ""}, model=model))]
    out += [sse(chunk({"content": p}, model=model)) for p in split_text(reply.text, reply.chunks)]
    if reply.kind == "hang":
        return out  # stalls after the text, never finishes
    for i, (cid, name, args) in enumerate(reply.calls):
        out.append(sse(chunk({"tool_calls": [tool_delta(i, id=cid, name=name, arguments="")]}, model=model)))
        for frag in split_text(_args_text(args), 2):
            out.append(sse(chunk({"tool_calls": [tool_delta(i, arguments=frag)]}, model=model)))
    out.append(sse(chunk({}, _finish(reply), model=model)))
    if (body.get("stream_options") or {}).get("include_usage"):
        prompt, completion = _usage(reply, body)
        out.append(sse(usage_chunk(prompt, completion, model=model)))
    out.append(DONE)
    return out


def _completion(reply: Reply, body: dict[str, Any], model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": _args_text(args)}}
            for cid, name, args in reply.calls
        ]
    prompt, completion = _usage(reply, body)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(reply)}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _finish(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.calls else "stop")


def _usage(reply: Reply, body: dict[str, Any]) -> tuple[int, int]:
    completion = max(1, len(split_text(reply.text, reply.chunks))) + 5 * len(reply.calls)
    return estimate_tokens(body.get("messages") or []), completion


def _args_text(args: Any) -> str:
    return args if isinstance(args, str) else json.dumps(args)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def _error(status: int, message: str, type_: str, headers: dict[str, str] | None = None) -> Response:
    err = {"message": message, "type": type_, "param": None, "code": None}
    return JSONResponse({"error": err}, status_code=status, headers=headers)


def _error_reply(reply: Reply) -> Response:
    if reply.body is not None:
        content = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
        return Response(content, reply.status, reply.headers, media_type="application/json")
    type_ = _ERROR_TYPES.get(reply.status, "server_error")
    return _error(reply.status, f"fake error {reply.status}", type_, reply.headers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible server on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=None, help="chunks in each default answer")
    args = parser.parse_args(argv)
    # another process reads only its exchanges (GET /v1/_fake/exchanges), never the request bodies
    fake = FakeOpenAI(chunk_delay=args.chunk_delay, tokens=args.tokens, keep_requests=False)
    anyio.run(fake.serve_forever, args.port)


if __name__ == "__main__":
    main()
