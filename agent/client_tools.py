"""Client tools: tools a client of the OpenAI-compatible endpoint declares in its request.

The model gets them beside the agent's own (a name clash is refused by the endpoint). When a model step
calls one, the agent runs its own calls of that step first, stores the step (its client calls marked
``"client": true`` in the stored ``tool_calls``) and ends the turn handing the client calls to the
client: they are *awaited*. The client's next request carrying their results continues that turn (the
results are stored as tool messages and the model is called again); a user message arriving first gets
them answered :data:`store.CLIENT_NO_RESULT` by the store's cut-turn marking (:mod:`store.cut_turns`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from store import Message, MessageStatus, Role

#: the counter of client tool calls handed to clients and results received (``/metrics``)
CLIENT_TOOL_CALLS = "hero_client_tool_calls_total"
CLIENT_TOOL_CALLS_HELP = (
    "Client tool calls (OpenAI endpoint tools) returned to the client (kind=returned) and their results "
    "received back (kind=result)."
)


@dataclass(frozen=True, slots=True)
class ClientResult:
    """The client's result of one awaited call (a ``role: tool`` message)."""

    call_id: str
    content: str


def stored_calls(tool_calls: str) -> list[tuple[str, bool]]:
    """(id, a client call) of each call in a stored ``tool_calls`` JSON text, in call order."""
    try:
        items = json.loads(tool_calls) if tool_calls else []
    except ValueError:
        return []
    return [
        (str(item["id"]), item.get("client") is True)
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict) and item.get("id")
    ]


def awaited(stored: Sequence[Message]) -> tuple[Message | None, list[str]]:
    """The newest step that handed calls to the client and the ids of those still without a result,
    in call order; ``(None, [])`` when the conversation awaits nothing."""
    answered: set[str] = set()
    for msg in reversed(stored):
        if msg.superseded_by:
            continue
        if msg.role == Role.TOOL:
            answered.add(msg.tool_call_id)
        elif msg.role == Role.ASSISTANT and msg.tool_calls:
            waiting = [i for i, client in stored_calls(msg.tool_calls) if client and i not in answered]
            return (msg, waiting) if waiting else (None, [])
        elif msg.role in (Role.ASSISTANT, Role.USER):
            return None, []
    return None, []


def user_of(stored: Sequence[Message], step: Message) -> Message | None:
    """The user message the turn of ``step`` answers."""
    seen = False
    for msg in reversed(stored):
        seen = seen or msg.sid == step.sid
        if seen and msg.role == Role.USER and not msg.superseded_by:
            return msg
    return None


def continued_answer(stored: Sequence[Message], ids: set[str]) -> Message | None:
    """For a continuation sent again (a retry after a lost response): the complete answer the turn
    gave after the step whose client calls ``ids`` were answered; None when there is none."""
    answered: set[str] = set()
    after: list[Message] = []
    for msg in reversed(stored):
        if msg.superseded_by:
            continue
        if msg.role == Role.USER:
            return None
        if msg.role == Role.TOOL:
            answered.add(msg.tool_call_id)
        elif msg.role == Role.ASSISTANT and msg.tool_calls:
            client = {i for i, is_client in stored_calls(msg.tool_calls) if is_client}
            if ids and ids <= client and ids <= answered:
                return next((m for m in reversed(after) if _final(m)), None)
        after.append(msg)
    return None


def _final(msg: Message) -> bool:
    return (
        msg.role == Role.ASSISTANT
        and msg.status == MessageStatus.COMPLETE
        and not msg.tool_calls
        and not msg.message_type
    )
