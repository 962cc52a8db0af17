"""The re-run step: answer a conversation's last user message again, keeping what came before.

Three ways in, one step (``POST /api/chat`` ``retry_of``/``regenerate_of``/``edit_of``, the OpenAI
endpoint's retries of an interrupted or failed request, the web page's Retry, Regenerate and Edit):

* **retry**: the last user message got no complete answer (interrupted, failed, cut by a crash): the
  turn answers the *stored* message again -- no second copy of it;
* **regenerate**: the same, even when its answer completed;
* **edit**: a new user message replaces the last one, as a new turn.

What the earlier attempt left -- partial or failed answers, the interrupted marker, tool calls and
their results, the replaced answer, and for an edit the replaced user message -- stays stored, marked
``superseded_by`` with the id of the turn that replaced it. Superseded messages are exported and shown
(collapsed) by the page, and never sent to the model again (:func:`agent.prompt.history.history_from`).

Only the *last* user message can be re-run: a conversation that moved on is refused (``conflict``),
before anything is written. The check and the marks happen under the conversation's turn lease, so
a turn still running on that message cannot interleave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from agent.errors import AgentError
from store import Message, MessageStatus, Role

#: the counter of re-runs, by kind and channel (``/metrics``)
RERUNS = "hero_turn_reruns_total"
RERUNS_HELP = "Turns that answered a stored user message again (retry, regenerate) or replaced it (edit)."


class RerunKind(StrEnum):
    RETRY = "retry"
    REGENERATE = "regenerate"
    EDIT = "edit"


@dataclass(frozen=True, slots=True)
class Rerun:
    """A turn that re-answers (or, for an edit, replaces) the stored user message ``user_message_id``."""

    kind: RerunKind
    user_message_id: str


class RerunRefused(AgentError):
    """The re-run cannot be done (user-safe message); nothing was written."""

    code = "conflict"


def to_supersede(window: Sequence[Message], rerun: Rerun) -> list[Message]:
    """The messages the re-run replaces, oldest first; raises :class:`RerunRefused` when the user
    message is not the conversation's last one (or, for a retry, when it already has a complete
    answer: that is a regenerate)."""
    index = next((i for i, m in enumerate(window) if m.sid == rerun.user_message_id), None)
    if index is None:
        raise RerunRefused("That message is not among the conversation's recent messages.")
    after = [m for m in window[index + 1 :] if not m.superseded_by]
    if any(m.role == Role.USER for m in after):
        raise RerunRefused("Only the last user message of the conversation can be answered again.")
    if rerun.kind == RerunKind.RETRY and completed(after):
        raise RerunRefused("That message already has a complete answer; regenerate it instead.")
    replaced = list(after)
    if rerun.kind == RerunKind.EDIT:
        replaced.insert(0, window[index])
    return replaced


def completed(answers: Sequence[Message]) -> bool:
    """A complete final answer is among ``answers`` (what followed a user message)."""
    return any(
        m.role == Role.ASSISTANT
        and m.status == MessageStatus.COMPLETE
        and not m.tool_calls
        and not m.message_type
        for m in answers
    )
