"""``POST /api/chat``: one message in, a typed SSE stream out.

The body may carry ``images`` (base64 ``data:`` URLs, see ``channels.web.media``), and at most one of
the re-run fields (``agent/rerun.py``), each naming the conversation's last user message and requiring
``conversation_id``: ``retry_of`` (answer it again: its earlier answer is missing, cut or failed; no
``message``), ``regenerate_of`` (answer it again even though it was answered; no ``message``) and
``edit_of`` (``message`` replaces it as a new turn). What the earlier attempt left stays stored,
marked superseded; a message that is not the last user message is refused with an ``error`` event
of code ``conflict``.

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

from agent.core import COMMAND_RE, TurnRequest
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
from agent.rerun import Rerun, RerunKind
from channels.web.auth import authenticate, scope_of
from channels.web.errors import ApiError, read_json_object
from channels.web.media import images_field, upload_limit
from channels.web.sse import EventStreamResponse, SendChunk, sse_event
from channels.web.state import WebState, web_state
from channels.web.turns import is_stop, request_key, run_turn
from channels.web.views import only_keys, str_field
from store import InvalidInput, Message, NotFound, Role, Scope


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


#: the re-run fields of ``POST /api/chat`` (at most one; see ``agent/rerun.py``)
RERUN_FIELDS = {"retry_of": RerunKind.RETRY, "regenerate_of": RerunKind.REGENERATE, "edit_of": RerunKind.EDIT}


async def chat(request: Request) -> Response:
    user = authenticate(request)  # 401 before the body is read
    state = web_state(request)
    media = state.agent.media
    body = await read_json_object(request, upload_limit(media, state.settings.web.max_body_bytes))
    scope = scope_of(request, user, body)
    only_keys(body, {"message", "conversation_id", "images", *RERUN_FIELDS})
    rerun = rerun_field(body)
    conversation_id = str_field(body, "conversation_id", max_len=64)
    if rerun is not None and rerun.kind != RerunKind.EDIT:
        return await rerun_turn(
            state, request, scope=scope, rerun=rerun, conversation_id=conversation_id, body=body
        )
    message = str_field(body, "message", required=True, max_len=state.settings.web.max_body_bytes)
    assert message is not None
    images = images_field(media, body, "web")
    if rerun is not None and (images or is_command(message)):
        raise ApiError(400, "invalid_field", "an edit is text only, not a command and without images")
    req = TurnRequest(
        scope=scope,
        channel="web",
        text=message,
        conversation_id=conversation_id,
        request_key=request_key(request, "web"),
        images=images,
        rerun=rerun,
    )
    state.agent.check_request(req)  # the one message check: a 400 (413 when too long) before the stream
    if state.shutdown.is_set() and not is_stop(message):
        raise ApiError(503, "shutting_down", "the server is shutting down")
    await check_conversation(state, scope, conversation_id)
    if rerun is not None:
        await stored_user_message(state, scope, conversation_id, rerun)
    return stream_turn(state, req)


def rerun_field(body: dict[str, Any]) -> Rerun | None:
    """The one re-run field of the body (``retry_of``, ``regenerate_of``, ``edit_of``), if any."""
    given = [name for name in RERUN_FIELDS if body.get(name) is not None]
    if not given:
        return None
    if len(given) > 1:
        raise ApiError(400, "invalid_field", f"{given[0]} and {given[1]} cannot be combined")
    name = given[0]
    value = str_field(body, name, max_len=64)
    assert value is not None
    if not body.get("conversation_id"):
        raise ApiError(400, "missing_field", f"conversation_id is required with {name}")
    return Rerun(RERUN_FIELDS[name], value.strip())


async def stored_user_message(
    state: WebState, scope: Scope, conversation_id: str | None, rerun: Rerun
) -> Message:
    """The user message a re-run names: 404 unless it is a user message of the conversation."""
    try:
        msg = await state.agent.store.messages.get(scope, rerun.user_message_id)
    except InvalidInput:
        raise NotFound("message", rerun.user_message_id) from None
    if msg.role != Role.USER or msg.conversation_id != conversation_id:
        raise NotFound("message", rerun.user_message_id)
    return msg


async def rerun_turn(
    state: WebState,
    request: Request,
    *,
    scope: Scope,
    rerun: Rerun,
    conversation_id: str | None,
    body: dict[str, Any],
) -> Response:
    """A retry or regenerate: the stored user message answered again (its text, its images)."""
    if body.get("message") is not None or body.get("images") is not None:
        raise ApiError(400, "invalid_field", "retry and regenerate send no message: the stored one")
    if state.shutdown.is_set():
        raise ApiError(503, "shutting_down", "the server is shutting down")
    await check_conversation(state, scope, conversation_id)
    msg = await stored_user_message(state, scope, conversation_id, rerun)
    req = TurnRequest(
        scope=scope,
        channel="web",
        text=msg.content,
        conversation_id=conversation_id,
        request_key=request_key(request, "web"),
        rerun=rerun,
    )
    return stream_turn(state, req)


def is_command(text: str) -> bool:
    return bool(COMMAND_RE.match(text.strip()))


async def check_conversation(state: WebState, scope: Scope, conversation_id: str | None) -> None:
    if conversation_id is not None:
        # a missing or foreign id is a plain 404 before the stream starts. An explicit id does not
        # change the user's active conversation (only /new, /switch and POST /api/conversations do):
        # switching it on every message costs store writes under a per-user lock, a convoy when many
        # chats of one user run at once (bench/web_load.py: time to first token x2)
        await state.agent.store.conversations.get(scope, conversation_id)


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
