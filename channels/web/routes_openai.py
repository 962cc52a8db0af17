"""The OpenAI-compatible endpoint: ``POST /v1/chat/completions`` (streaming and not), ``GET /v1/models``.

The agent keeps its own history, so only the **last user message** of ``messages`` is the turn input
(its ``text`` parts; ``image_url`` parts as images, ``data:`` URLs or http(s) fetched under
``http_fetch``'s address policy; ``input_audio`` parts transcribed like voice messages);
earlier messages (and system prompts) in the request are ignored. The conversation is picked by:

1. the header ``X-Hero-Conversation: <id>`` (must exist in the caller's scope, else 404);
2. else the ``user`` field: each distinct value maps to one conversation of the caller's scope
   (remembered in the store's per-scope state under ``openai-user:<value>``; a deleted one is replaced
   by a new conversation); no ``user`` field is the value ``""``: one default API conversation.

Turns are stored with channel ``api``; the chosen conversation id is echoed in the response header
``X-Hero-Conversation``. Errors use OpenAI's shape (``error.message``, ``type``, ``param``, ``code``).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.core import TurnRequest
from agent.events import CommandOutput, TextDelta, TurnEvent, TurnFailed
from agent.media import VoiceNote
from channels.web.auth import authenticate, scope_of
from channels.web.errors import ApiError, error_body, read_json_object, status_for
from channels.web.media import upload_limit
from channels.web.sse import EventStreamResponse, SendChunk, run_guarded, sse_data
from channels.web.state import WebState, web_state
from channels.web.turns import TurnSummary, request_key, run_turn
from store import NewAttachment, NotFound, Scope, check_text

CHANNEL = "api"
CONVERSATION_HEADER = "x-hero-conversation"


def _model_name(state: WebState) -> str:
    return state.settings.web.api_model_name


async def list_models(request: Request) -> Response:
    authenticate(request)
    name = _model_name(web_state(request))
    return JSONResponse(
        {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "hero-agent"}]}
    )


@dataclass(frozen=True, slots=True)
class UserInput:
    """The last user message of a request: its text parts, image URLs and audio parts."""

    text: str
    image_urls: tuple[str, ...] = ()
    #: (base64 data, format) of each ``input_audio`` part
    audio: tuple[tuple[str, str], ...] = ()


def last_user_input(body: dict[str, Any]) -> UserInput:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "invalid_messages", "messages must be a non-empty list")
    for msg in reversed(messages):
        if not isinstance(msg, dict):
            raise ApiError(400, "invalid_messages", "every message must be an object")
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            found = UserInput(content)
        elif isinstance(content, list):
            found = _parts(content)
        else:
            raise ApiError(400, "invalid_messages", "message content must be a string or a list of parts")
        if not found.text.strip() and not found.image_urls and not found.audio:
            raise ApiError(400, "invalid_messages", "the last user message is empty")
        return found
    raise ApiError(400, "invalid_messages", "messages contain no user message")


def _parts(content: list[Any]) -> UserInput:
    """Text, ``image_url`` and ``input_audio`` parts; any other part is a 400, never a silent drop."""
    texts: list[str] = []
    images: list[str] = []
    audio: list[tuple[str, str]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            raw = part.get("image_url")
            url = raw.get("url") if isinstance(raw, dict) else raw
            if not isinstance(url, str) or not url.startswith(("data:", "http://", "https://")):
                raise ApiError(400, "invalid_messages", "image_url needs a data:, http:// or https:// url")
            images.append(url)
        elif kind == "input_audio":
            raw = part.get("input_audio")
            if not isinstance(raw, dict) or not isinstance(raw.get("data"), str):
                raise ApiError(400, "invalid_messages", "input_audio needs base64 data and a format")
            audio.append((raw["data"], str(raw.get("format") or "")))
        else:
            raise ApiError(
                400,
                "invalid_messages",
                f"unsupported content part {kind!r}: use text, image_url or input_audio",
            )
    return UserInput("\n".join(texts), tuple(images), tuple(audio))


async def media_of(
    state: WebState, found: UserInput
) -> tuple[str, tuple[NewAttachment, ...], VoiceNote | None]:
    """The turn's text (with the transcript of its audio), checked images and voice note."""
    media = state.agent.media
    text, voice = found.text, None
    # a MediaError is rendered by the app's error handler
    media.check_count(len(found.image_urls), CHANNEL)
    images = tuple([await media.image_from_url(url, CHANNEL) for url in found.image_urls])
    for data, fmt in found.audio:
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "invalid_messages", "input_audio data is not valid base64") from None
        spoken = await media.transcribe(raw, f"audio/{fmt}" if fmt else "", CHANNEL)
        text = f"{text}\n{spoken.text}" if text.strip() else spoken.text
        voice = spoken.voice
    return text, images, voice


async def pick_conversation(state: WebState, request: Request, scope: Scope, user_field: str) -> str:
    store = state.agent.store
    chosen = request.headers.get(CONVERSATION_HEADER)
    if chosen:
        return (await store.get_conversation(scope, chosen.strip())).sid
    key = f"openai-user:{user_field}"
    # one lock per (scope, user field): two first requests must not create two conversations
    async with state.locks.hold((scope.context, scope.user_id, user_field)):
        known = await store.get_state(scope, key)
        if known:
            try:
                return (await store.get_conversation(scope, known)).sid
            except NotFound:
                pass  # deleted since: start a new one
        title = f"API: {user_field}" if user_field else "API"
        conv = await store.create_conversation(scope, title[:200], channel=CHANNEL)
        await store.set_state(scope, key, conv.sid)
        return conv.sid


async def chat_completions(request: Request) -> Response:
    user = authenticate(request)  # 401 before the body is read
    state = web_state(request)
    media = state.agent.media
    cap = (
        upload_limit(media, state.settings.web.max_body_bytes) + state.settings.agent.max_audio_bytes * 4 // 3
    )
    body = await read_json_object(request, cap)
    scope = scope_of(request, user, body)
    found = last_user_input(body)
    check_text(found.text, state.agent.max_message_chars)  # the store's rules, before any transcription
    user_field = body.get("user", "")
    if not isinstance(user_field, str) or len(user_field) > 256:
        raise ApiError(400, "invalid_user", "user must be a string of at most 256 characters")
    model = body.get("model") or _model_name(state)
    if not isinstance(model, str):
        raise ApiError(400, "invalid_model", "model must be a string")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "invalid_stream", "stream must be a boolean")
    options = body.get("stream_options") or {}
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    if state.shutdown.is_set():
        raise ApiError(503, "shutting_down", "the server is shutting down")
    key = request_key(request, CHANNEL)
    text, images, voice = await media_of(state, found)
    conversation_id = await pick_conversation(state, request, scope, user_field)
    req = TurnRequest(
        scope=scope,
        channel=CHANNEL,
        text=text,
        conversation_id=conversation_id,
        request_key=key,
        images=images,
        voice=voice,
    )
    headers = {"X-Hero-Conversation": conversation_id}
    created = int(time.time())
    if stream:
        return _stream(state, req, model, created, include_usage=include_usage, headers=headers)

    summary = TurnSummary()
    failure: list[TurnFailed] = []

    async def on_event(event: TurnEvent) -> None:
        if isinstance(event, TurnFailed):
            failure.append(event)

    async def work() -> None:
        nonlocal summary
        summary = await run_turn(state, req, on_event)

    outcome = await run_guarded(state, request.receive, work)
    if outcome != "complete":
        # disconnected: nobody reads this answer; shutdown: the reply was stored as interrupted
        raise ApiError(503, "shutting_down", "the reply was interrupted: the server is shutting down")
    if failure:
        err = failure[0]
        raise ApiError(status_for(err.code), err.code, err.message, headers=headers)
    return JSONResponse(
        {
            "id": f"chatcmpl-{conversation_id}-{created}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": summary.text},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(summary),
        },
        headers=headers,
    )


def _usage(summary: TurnSummary) -> dict[str, int]:
    return {
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "total_tokens": summary.prompt_tokens + summary.completion_tokens,
    }


def _stream(
    state: WebState,
    req: TurnRequest,
    model: str,
    created: int,
    *,
    include_usage: bool,
    headers: dict[str, str],
) -> Response:
    chunk_id = f"chatcmpl-{req.conversation_id}-{created}"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return sse_data(json.dumps(body, separators=(",", ":"), ensure_ascii=False))

    async def produce(emit: SendChunk) -> None:
        await emit(chunk({"role": "assistant", "content": ""}))

        async def on_event(event: TurnEvent) -> None:
            if (isinstance(event, TextDelta) and event.text) or isinstance(event, CommandOutput):
                await emit(chunk({"content": event.text}))
            elif isinstance(event, TurnFailed):
                status = status_for(event.code)
                await emit(sse_data(json.dumps(error_body(status, event.code, event.message, openai=True))))

        summary = await run_turn(state, req, on_event)
        if summary.outcome in ("complete", "command"):
            await emit(chunk({}, "stop"))
            if include_usage:
                usage = {
                    "id": chunk_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": _usage(summary),
                }
                await emit(sse_data(json.dumps(usage, separators=(",", ":"))))
        await emit(sse_data("[DONE]"))

    async def on_cut(emit: SendChunk, reason: str) -> None:
        err = error_body(503, reason, "the reply was interrupted: the server is shutting down", openai=True)
        await emit(sse_data(json.dumps(err)))
        await emit(sse_data("[DONE]"))

    return EventStreamResponse(state, produce, on_cut, headers=headers)


ROUTES = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
]
