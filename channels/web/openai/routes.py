"""The OpenAI-compatible endpoint: ``POST /v1/chat/completions`` (streaming and not), ``GET /v1/models``
and ``GET /v1/models/{id}``.

The agent keeps its own history, so the **last user message** of ``messages`` is the turn input (its
``text`` parts; ``image_url`` parts as images, ``data:`` URLs or http(s) fetched under ``http_fetch``'s
address policy; ``input_audio`` parts transcribed like voice messages). What comes before it picks
the conversation (:mod:`channels.web.openai.history`: ``X-Hero-Conversation``, else the history's
digest, else a new conversation; ``user`` is a namespace), after retry detection
(:mod:`channels.web.openai.retry`). The client's ``system``/``developer`` messages are used for the
turn after the agent's own instructions and memories, and stored; its generation parameters go to
the provider (:mod:`channels.web.openai.params`).

The request's ``tools`` are offered to the model beside the agent's own (:mod:`channels.web.openai.tools`);
a call to one ends the completion with ``finish_reason: "tool_calls"``, and a request whose messages end
with the ``role: tool`` results continues that turn (:mod:`agent.client_tools`).

Turns are stored with channel ``api``; the conversation id is echoed in the response header
``X-Hero-Conversation``; the completion id is ``chatcmpl-<turn id>``, stored with the answer (a
replayed answer has its first id). Errors use OpenAI's shape (``error.message``, ``type``,
``param``, ``code``).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.core import TurnRequest
from agent.events import CommandOutput, TextDelta, TurnEvent, TurnFailed, TurnStarted
from agent.media import VoiceNote
from channels.web.auth import authenticate, scope_of
from channels.web.errors import ApiError, error_body, read_json_object, status_for
from channels.web.media import upload_limit
from channels.web.openai.history import extend, seed, title_from, visible_history
from channels.web.openai.params import client_system, turn_options
from channels.web.openai.retry import body_digest, identify, remember
from channels.web.openai.tools import client_tools, tool_results, wire_calls
from channels.web.sse import EventStreamResponse, SendChunk, run_guarded, sse_data
from channels.web.state import WebState, web_state
from channels.web.turns import TurnSummary, run_turn
from store import Message, NewAttachment, Scope, check_text

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


async def pick_conversation(
    state: WebState,
    request: Request,
    scope: Scope,
    namespace: str,
    *,
    history: list[tuple[str, str]],
    last: str,
    continuing: bool = False,
) -> tuple[str, str]:
    """The conversation id and the digest of the history the client sent (:mod:`channels.web.openai.history`).

    ``continuing``: the request carries tool results; the conversation is the one whose turn awaits
    them: its digest ends with the user message those calls answer (a tool-call step is not text)."""
    store = state.agent.store
    prior = extend(seed(namespace), history)
    chosen = request.headers.get(CONVERSATION_HEADER)
    if chosen:
        return (await store.conversations.get(scope, chosen.strip())).sid, prior
    if continuing:
        awaiting = await store.conversations.find_by_tail_digest(scope, extend(prior, [("user", last)]))
        if awaiting is None:
            raise ApiError(409, "conflict", "no conversation awaits these tool results", param="messages")
        return awaiting.sid, prior
    if history:
        found = await store.conversations.find_by_tail_digest(scope, prior)
        if found is not None:
            return found.sid, prior
    conv = await store.conversations.create(scope, title_from(history, last), channel=CHANNEL)
    # the history the client sent becomes the new conversation's start: the model sees it
    for role, text in history:
        await store.messages.append(
            scope, Message(conversation_id=conv.sid, role=role, content=text, channel=CHANNEL)
        )
    return conv.sid, prior


@dataclass(frozen=True, slots=True)
class Completion:
    """One chat completion request, checked."""

    req: TurnRequest
    model: str
    #: the history digest the answer extends (the conversation's ``tail_digest`` after it)
    prior: str
    last_text: str
    headers: dict[str, str]


async def chat_completions(request: Request) -> Response:
    user = authenticate(request)  # 401 before the body is read
    state = web_state(request)
    media = state.agent.media
    cap = (
        upload_limit(media, state.settings.web.max_body_bytes) + state.settings.agent.max_audio_bytes * 4 // 3
    )
    body = await read_json_object(request, cap)
    raw = body_digest(body)
    scope = scope_of(request, user, body)
    found = last_user_input(body)
    check_text(found.text, state.agent.max_message_chars)  # the store's rules, before any transcription
    namespace = body.get("user", "")
    if not isinstance(namespace, str) or len(namespace) > 256:
        raise ApiError(400, "invalid_user", "user must be a string of at most 256 characters", param="user")
    model = body.get("model") or _model_name(state)
    if not isinstance(model, str):
        raise ApiError(400, "invalid_model", "model must be a string", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "invalid_stream", "stream must be a boolean", param="stream")
    options = body.get("stream_options") or {}
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    messages = body["messages"]
    own_tools = state.agent.tools.names() if state.agent.tools is not None else ()
    turn_options_ = replace(
        turn_options(body, state.agent.provider, client_system(messages)),
        client_tools=client_tools(body, own_tools),
    )
    results = tool_results(messages)
    if state.shutdown.is_set():
        raise ApiError(503, "shutting_down", "the server is shutting down")
    store = state.agent.store
    ident = await identify(store, request, scope, namespace, raw)
    # a continuation answers the stored user message: its media were taken when it came
    text, images, voice = (found.text, (), None) if results else await media_of(state, found)
    history = visible_history(messages)
    if ident.conversation_id is not None and not request.headers.get(CONVERSATION_HEADER):
        # a retry goes where its first attempt went
        conversation_id, prior = ident.conversation_id, extend(seed(namespace), history)
    else:
        conversation_id, prior = await pick_conversation(
            state, request, scope, namespace, history=history, last=found.text, continuing=bool(results)
        )
    await remember(store, scope, namespace, raw, ident=ident, conversation_id=conversation_id)
    completion = Completion(
        TurnRequest(
            scope=scope,
            channel=CHANNEL,
            text=text,
            conversation_id=conversation_id,
            request_key=ident.key,
            images=images,
            voice=voice,
            options=turn_options_,
            client_results=results,
        ),
        model,
        prior,
        found.text,
        {"X-Hero-Conversation": conversation_id},
    )
    if stream:
        return _stream(state, completion, include_usage=include_usage)
    return await _complete(state, request, completion)


async def _advance(state: WebState, c: Completion, answer: str, *, awaiting: bool = False) -> None:
    """After a completed turn: the conversation's digest now ends with what the client got (a turn
    awaiting the client's tool results: with the user message, the tool-call step is not text)."""
    seen = [("user", c.last_text)] + ([] if awaiting else [("assistant", answer)])
    digest = extend(c.prior, seen)
    await state.agent.store.conversations.set_tail_digest(c.req.scope, c.req.conversation_id or "", digest)


async def _complete(state: WebState, request: Request, c: Completion) -> Response:
    summary = TurnSummary()
    failure: list[TurnFailed] = []

    async def on_event(event: TurnEvent) -> None:
        if isinstance(event, TurnFailed):
            failure.append(event)

    async def work() -> None:
        nonlocal summary
        summary = await run_turn(state, c.req, on_event)

    outcome = await run_guarded(state, request.receive, work)
    if outcome != "complete":
        # disconnected: nobody reads this answer; shutdown: the reply was stored as interrupted
        raise ApiError(503, "shutting_down", "the reply was interrupted: the server is shutting down")
    if failure:
        err = failure[0]
        raise ApiError(status_for(err.code), err.code, err.message, headers=c.headers)
    if summary.outcome == "complete":
        await _advance(state, c, summary.text, awaiting=bool(summary.client_calls))
    created = int(time.time())
    message: dict[str, Any] = {"role": "assistant", "content": summary.text}
    if summary.client_calls:
        # the turn awaits the client's results
        calls = wire_calls(summary.client_calls)
        message = {"role": "assistant", "content": summary.text or None, "tool_calls": calls}
    return JSONResponse(
        {
            "id": f"chatcmpl-{summary.turn_id}",
            "object": "chat.completion",
            "created": created,
            "model": c.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if summary.client_calls else "stop",
                }
            ],
            "usage": _usage(summary),
        },
        headers=c.headers,
    )


def _usage(summary: TurnSummary) -> dict[str, int]:
    return {
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "total_tokens": summary.prompt_tokens + summary.completion_tokens,
    }


def _stream(state: WebState, c: Completion, *, include_usage: bool) -> Response:
    created = int(time.time())
    ids: list[str] = []  # the completion id, known at the turn's first event
    seen: list[str] = []  # what the client got

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = {
            "id": ids[0] if ids else "chatcmpl-",
            "object": "chat.completion.chunk",
            "created": created,
            "model": c.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else [],
            **extra,
        }
        return sse_data(json.dumps(body, separators=(",", ":"), ensure_ascii=False))

    async def produce(emit: SendChunk) -> None:
        async def on_event(event: TurnEvent) -> None:
            if isinstance(event, TurnStarted | CommandOutput) and not ids:
                ids.append(f"chatcmpl-{event.turn_id}" if isinstance(event, TurnStarted) else _command_id())
                await emit(chunk({"role": "assistant", "content": ""}))
            if (isinstance(event, TextDelta) and event.text) or isinstance(event, CommandOutput):
                seen.append(event.text)
                await emit(chunk({"content": event.text}))
            elif isinstance(event, TurnFailed):
                status = status_for(event.code)
                await emit(sse_data(json.dumps(error_body(status, event.code, event.message, openai=True))))

        summary = await run_turn(state, c.req, on_event)
        if summary.outcome in ("complete", "command"):
            if summary.client_calls:
                await emit(chunk({"tool_calls": wire_calls(summary.client_calls, indexed=True)}))
            await emit(chunk({}, "tool_calls" if summary.client_calls else "stop"))
            if include_usage:
                await emit(chunk({}, None, usage=_usage(summary)))
            if summary.outcome == "complete":
                await _advance(state, c, "".join(seen), awaiting=bool(summary.client_calls))
        await emit(sse_data("[DONE]"))

    async def on_cut(emit: SendChunk, reason: str) -> None:
        err = error_body(503, reason, "the reply was interrupted: the server is shutting down", openai=True)
        await emit(sse_data(json.dumps(err)))
        await emit(sse_data("[DONE]"))

    return EventStreamResponse(state, produce, on_cut, headers=c.headers)


def _command_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


async def retrieve_model(request: Request) -> Response:
    authenticate(request)
    name = _model_name(web_state(request))
    asked = request.path_params["model"]
    if asked != name:
        raise ApiError(404, "model_not_found", f"the model {asked!r} does not exist", param="model")
    return JSONResponse({"id": name, "object": "model", "created": 0, "owned_by": "hero-agent"})


ROUTES = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model}", retrieve_model, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
]
