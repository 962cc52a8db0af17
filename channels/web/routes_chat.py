"""``POST /api/chat``: one message in, a typed SSE stream out.

The body may carry ``images`` (base64 ``data:`` URLs, see ``channels.web.media``).

Events, in order: ``start`` (ids), then any of ``delta`` / ``tool_start`` / ``tool_end`` / ``usage`` /
``retry``, then exactly one of ``done`` (ids + usage) or ``error``. A slash command answers a single
``command`` event instead. When the client disconnects, the turn is cancelled and the agent stores the
partial reply marked ``interrupted``. On shutdown the turn gets ``[web] shutdown_deadline_s`` to finish,
then it is cancelled the same way and the stream ends with ``error`` (code ``shutdown``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agent.core import TurnRequest
from agent.events import (
    Done,
    Retrying,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnEvent,
    TurnFailed,
    TurnStarted,
    UsageInfo,
)
from channels.web.auth import authenticate, scope_of
from channels.web.errors import ApiError, read_json_object
from channels.web.media import images_field, upload_limit
from channels.web.sse import EventStreamResponse, SendChunk, sse_event
from channels.web.state import WebState, web_state
from channels.web.turns import is_stop, request_key, run_turn
from channels.web.views import only_keys, str_field
from store import Scope


def event_payload(event: TurnEvent, context: str) -> tuple[str, dict[str, Any]]:
    """The SSE event name and data for one turn event (the public event vocabulary)."""
    if isinstance(event, TurnStarted):
        return "start", {
            "conversation_id": event.conversation_id,
            "user_message_id": event.user_message_id,
            "turn_id": event.turn_id,
            "context": context,
        }
    if isinstance(event, TextDelta):
        return "delta", {"text": event.text}
    if isinstance(event, ToolStarted):
        return "tool_start", {"call_id": event.call_id, "name": event.name, "arguments": event.arguments}
    if isinstance(event, ToolFinished):
        return "tool_end", {
            "call_id": event.call_id,
            "name": event.name,
            "ok": event.ok,
            "summary": event.summary,
            "duration_ms": event.duration_ms,
        }
    if isinstance(event, UsageInfo):
        return "usage", {
            "model": event.model,
            "prompt_tokens": event.prompt_tokens,
            "completion_tokens": event.completion_tokens,
        }
    if isinstance(event, Retrying):
        return "retry", {
            "attempt": event.attempt,
            "max_retries": event.max_retries,
            "delay_s": event.delay_s,
            "reason": event.reason,
        }
    if isinstance(event, Done):
        return "done", {
            "conversation_id": event.conversation_id,
            "message_id": event.message_id,
            "text": event.text,
            "usage": {
                "model": event.model,
                "prompt_tokens": event.prompt_tokens,
                "completion_tokens": event.completion_tokens,
            },
        }
    if isinstance(event, TurnFailed):
        return "error", {
            "code": event.code,
            "message": event.message,
            "conversation_id": event.conversation_id,
        }
    return "command", {
        "command": event.command,
        "text": event.text,
        "ok": event.ok,
        "data": event.data,
        "conversation_id": event.conversation_id,
    }


async def chat(request: Request) -> Response:
    user = authenticate(request)  # 401 before the body is read
    state = web_state(request)
    media = state.agent.media
    body = await read_json_object(request, upload_limit(media, state.settings.web.max_body_bytes))
    scope = scope_of(request, user, body)
    only_keys(body, {"message", "conversation_id", "images"})
    message = str_field(body, "message", required=True, max_len=state.settings.web.max_body_bytes)
    assert message is not None
    req = TurnRequest(
        scope=scope,
        channel="web",
        text=message,
        conversation_id=str_field(body, "conversation_id", max_len=64),
        request_key=request_key(request, "web"),
        images=images_field(media, body, "web"),
    )
    state.agent.check_request(req)  # the one message check: a 400 (413 when too long) before the stream
    if state.shutdown.is_set() and not is_stop(message):
        raise ApiError(503, "shutting_down", "the server is shutting down")
    await check_conversation(state, scope, req.conversation_id)
    return stream_turn(state, req)


async def check_conversation(state: WebState, scope: Scope, conversation_id: str | None) -> None:
    if conversation_id is not None:
        # a missing or foreign id is a plain 404 before the stream starts. An explicit id does not
        # change the user's active conversation (only /new, /switch and POST /api/conversations do):
        # switching it on every message costs store writes under a per-user lock, a convoy when many
        # chats of one user run at once (bench/web_load.py: time to first token x2)
        await state.agent.store.get_conversation(scope, conversation_id)


def stream_turn(
    state: WebState, req: TurnRequest, after_start: tuple[tuple[str, dict[str, Any]], ...] = ()
) -> Response:
    """The turn as an SSE stream; ``after_start`` events follow the ``start`` event (the voice
    route's ``transcript``)."""
    context = req.scope.context

    async def produce(emit: SendChunk) -> None:
        async def on_event(event: TurnEvent) -> None:
            name, data = event_payload(event, context)
            await emit(sse_event(name, data))
            if name == "start":
                for extra_name, extra in after_start:
                    await emit(sse_event(extra_name, extra))

        await run_turn(state, req, on_event)

    async def on_cut(emit: SendChunk, reason: str) -> None:
        message = (
            "the server is shutting down; the reply was interrupted"
            if reason == "shutdown"
            else "internal error; the reply was interrupted"
        )
        await emit(
            sse_event(
                "error", {"code": reason, "message": message, "conversation_id": req.conversation_id or ""}
            )
        )

    return EventStreamResponse(state, produce, on_cut)


ROUTES = [Route("/api/chat", chat, methods=["POST"])]
