"""Running one agent turn for a web request: events out, metrics and one structured log line.

Shared by ``/api/chat`` (channel ``web``) and ``/v1/chat/completions`` (channel ``api``). ``/stop``
is answered here by cancelling the conversation's running turn through ``Agent.stop_turn`` (a running
turn holds the conversation, so sending ``/stop`` through the agent would wait behind it).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import anyio
import structlog
from starlette.requests import Request

from agent.core import TurnRequest
from agent.events import (
    CommandOutput,
    Done,
    EventSink,
    TextDelta,
    TurnEvent,
    TurnFailed,
    TurnStarted,
    UsageInfo,
)
from agent.providers.base import ToolCall
from channels.web.errors import ApiError
from channels.web.state import WebState
from config.errors import HeroError

log = structlog.get_logger("hero.web")


@dataclass
class TurnSummary:
    """What happened, for metrics and logs (and for non-streaming answers)."""

    conversation_id: str = ""
    text: str = ""
    outcome: str = "interrupted"  # complete | error | interrupted | command
    error_code: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    first_token_s: float | None = None
    #: the turn's id (for a replayed answer: the id of the turn that gave it)
    turn_id: str = ""
    #: the turn ended handing these calls to the client (the OpenAI endpoint's client tools)
    client_calls: tuple[ToolCall, ...] = ()


#: ``Idempotency-Key``: printable ASCII, like the header's common use (Stripe, the IETF draft)
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")


def request_key(request: Request, channel: str) -> str | None:
    """The turn's idempotency key from the optional ``Idempotency-Key`` header: a client that sends the
    same request again (after a lost response) gets the first answer instead of a second turn."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not _KEY_RE.match(key):
        raise ApiError(
            400, "invalid_idempotency_key", "Idempotency-Key must be 1-200 printable ASCII characters"
        )
    return f"{channel}-request:{key}"


def is_stop(text: str) -> bool:
    return text.strip().split(maxsplit=1)[:1] == ["/stop"]


async def run_turn(state: WebState, req: TurnRequest, on_event: EventSink) -> TurnSummary:
    """Drive ``Agent.handle`` for ``req``, handing every event to ``on_event``.

    User-safe errors raised before the turn starts (a store error, a slash command's) become a
    ``TurnFailed`` event. Cancellation (client gone, shutdown deadline) propagates; the agent stores
    the partial reply marked interrupted.
    """
    started = anyio.current_time()
    summary = TurnSummary(conversation_id=req.conversation_id or "")
    try:
        if is_stop(req.text):
            stopped = await state.agent.stop_turn(req.scope, req.conversation_id)
            text = "Stopped the running turn." if stopped else "No turn is running."
            await _deliver(
                CommandOutput(command="stop", text=text, data={"stopped": stopped}),
                summary,
                started,
                on_event,
            )
        else:
            events = state.agent.handle(req)
            try:
                async for event in events:
                    await _deliver(event, summary, started, on_event)
            finally:
                # close the turn's iterator now, not at garbage collection: its cleanup stores the turn
                if isinstance(events, AsyncGenerator):
                    with anyio.CancelScope(shield=True):
                        await events.aclose()
    except HeroError as exc:
        if not exc.user_safe:
            raise
        await _deliver(TurnFailed.of(exc, summary.conversation_id), summary, started, on_event)
    finally:
        elapsed = anyio.current_time() - started
        if is_stop(req.text):  # answered here, not by Agent.handle (which counts every other turn)
            state.agent.metrics.turn_finished(
                req.channel, "command", seconds=elapsed, ttft=None, prompt_tokens=0, completion_tokens=0
            )
        log.info(
            "web.turn",
            channel=req.channel,
            context=req.scope.context,
            user=req.scope.user_id,
            conversation=summary.conversation_id,
            outcome=summary.outcome,
            error_code=summary.error_code,
            duration_ms=round(elapsed * 1000, 1),
            ttft_ms=None if summary.first_token_s is None else round(summary.first_token_s * 1000, 1),
            prompt_tokens=summary.prompt_tokens,
            completion_tokens=summary.completion_tokens,
        )
    return summary


async def _deliver(event: TurnEvent, summary: TurnSummary, started: float, on_event: EventSink) -> None:
    if isinstance(event, TurnStarted):
        summary.conversation_id = event.conversation_id
        summary.turn_id = event.turn_id
    elif isinstance(event, TextDelta):
        if summary.first_token_s is None:
            summary.first_token_s = anyio.current_time() - started
        summary.text += event.text
    elif isinstance(event, UsageInfo):
        summary.model = event.model or summary.model
    elif isinstance(event, Done):
        summary.outcome = "complete"
        summary.conversation_id = event.conversation_id or summary.conversation_id
        summary.text = event.text or summary.text
        summary.prompt_tokens = event.prompt_tokens
        summary.completion_tokens = event.completion_tokens
        summary.model = event.model or summary.model
        summary.client_calls = event.client_calls
    elif isinstance(event, TurnFailed):
        summary.outcome = "error"
        summary.error_code = event.code
        summary.conversation_id = event.conversation_id or summary.conversation_id
    elif isinstance(event, CommandOutput):
        summary.outcome = "command"
        summary.text = event.text
        summary.conversation_id = event.conversation_id or summary.conversation_id
    await on_event(event)
