"""The marks a cut turn leaves (SPEC 9): what a conversation's tail needs after its turn was cut off.

A turn cut by kill -9 (or a lost store) leaves its user message without an answer, and possibly an
assistant message whose tool calls have no results. When the conversation's next turn opens -- in the
same batch, before that turn's user message -- and when a daemon starts for the turns its dead
predecessor held, the tail is read newest first back to its newest user message, and:

* every tool call there without a result gets a tool message ``error: interrupted`` (status error);
  a call to a *client* tool (the OpenAI endpoint's ``tools``: marked ``"client": true`` in the stored
  ``tool_calls``) was awaiting the client, which sent another user message instead: it gets
  :data:`CLIENT_NO_RESULT`;
* that user message, when no assistant answer follows it, gets an assistant message with status
  ``interrupted``, ``message_type`` ``interrupted`` and the visible text :data:`INTERRUPTED_TEXT`
  (an empty marker would be dropped from what the model sees, which would then hold two user
  messages in a row). An assistant message that handed client tool calls to the client (its own
  calls all answered) ended its turn cleanly: it counts as the answer.

Each marker carries a request key derived from what it answers, so marking twice (two processes, a
retried batch) stores nothing more. Pure functions over records: every engine runs them, the embedded
one inside the transaction that opens the turn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from store.models import BASE_FIELDS, Message, MessageStatus, Record, Role

INTERRUPTED_TEXT = "[no reply: the agent stopped before answering]"
INTERRUPTED_RESULT = "error: interrupted"
#: the result of a client tool call whose client sent another user message instead of the result
CLIENT_NO_RESULT = "error: the client returned no result"
#: ``message_type`` of the assistant marker of an unanswered user message
INTERRUPTED_TYPE = "interrupted"
#: how far back the tail is read (a cut turn longer than this keeps its older calls unmarked in the
#: store; the history repair still answers them in what the model sees)
TAIL = 200


def settled(newest_first: Sequence[Record]) -> bool:
    """True when the newest message ends a turn (an assistant message without tool calls), or there
    is none: the common case, decided from one record."""
    if not newest_first:
        return True
    newest = newest_first[0]
    return newest.get("role") == Role.ASSISTANT and not _calls(newest.get("tool_calls"))


def markers(
    conversation_id: str, newest_first: Sequence[Record], own_user_sid: str | None = None
) -> list[tuple[Record, str]]:
    """The markers the tail needs, oldest first, each with its request key: the fields of a new
    message (without the store-owned ones) and the key. ``own_user_sid``: the user message the
    opening turn is about to answer (its request key was stored before: a repeated batch, a
    redelivered request), which gets no marker -- it is being answered now."""
    answered: set[str] = set()
    # (assistant record, index, call id, name, a client call)
    open_calls: list[tuple[Record, int, str, str, bool]] = []
    user: Record | None = None
    replied = False
    for rec in newest_first:
        role = rec.get("role")
        if role == Role.TOOL:
            answered.add(str(rec.get("tool_call_id") or ""))
        elif role == Role.ASSISTANT:
            calls = _calls(rec.get("tool_calls"))
            if not calls or awaits_client(calls, answered):
                replied = True
            for index, (call_id, name, client) in reversed(list(enumerate(calls))):
                if call_id not in answered:
                    open_calls.append((rec, index, call_id, name, client))
        elif role == Role.USER:
            user = rec
            break
    out: list[tuple[Record, str]] = []
    for rec, index, call_id, name, client in reversed(open_calls):
        fields = _message(
            conversation_id,
            Role.TOOL,
            CLIENT_NO_RESULT if client else INTERRUPTED_RESULT,
            str(rec.get("channel") or ""),
            tool_call_id=call_id,
            name=name,
            status=MessageStatus.ERROR,
        )
        out.append((fields, f"interrupted:{conversation_id}:{rec.get('sid')}:{index}"))
    if user is not None and not replied and user.get("sid") != own_user_sid:
        fields = _message(
            conversation_id,
            Role.ASSISTANT,
            INTERRUPTED_TEXT,
            str(user.get("channel") or ""),
            status=MessageStatus.INTERRUPTED,
            message_type=INTERRUPTED_TYPE,
        )
        out.append((fields, f"interrupted:{conversation_id}:{user.get('sid')}"))
    return out


def _message(
    conversation_id: str,
    role: Role,
    content: str,
    channel: str,
    *,
    status: MessageStatus,
    tool_call_id: str = "",
    name: str = "",
    message_type: str = "",
) -> Record:
    msg = Message(
        conversation_id=conversation_id,
        role=role.value,
        content=content,
        channel=channel,
        timestamp=int(time.time() * 1000),
        tool_call_id=tool_call_id,
        name=name,
        status=status.value,
        message_type=message_type,
    )
    return {k: v for k, v in msg.to_record().items() if k not in BASE_FIELDS}


def awaits_client(calls: Sequence[tuple[str, str, bool]], answered: set[str]) -> bool:
    """The step handed client tool calls to the client: it has some, and its own calls are answered."""
    return any(client for _, _, client in calls) and all(
        client or call_id in answered for call_id, _, client in calls
    )


def _calls(raw: object) -> list[tuple[str, str, bool]]:
    """(id, name, a client call) of each call in a stored ``tool_calls`` JSON text; malformed entries
    are skipped."""
    if not isinstance(raw, str) or not raw:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        return []
    return [
        (str(item["id"]), str(item.get("name") or ""), item.get("client") is True)
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict) and item.get("id")
    ]
