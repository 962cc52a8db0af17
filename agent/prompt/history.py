"""The context window: what part of a conversation the model sees, and how big it is.

* A token estimate with no tokenizer (characters / 4 plus a per-message overhead), corrected per model by
  the ``prompt_tokens`` the provider reports (:class:`TokenCalibrator`, in memory).
* Stored messages become :class:`~agent.providers.base.ChatMessage` values; an interrupted or failed
  partial reply stays as text marked ``[interrupted]``.
* A message marked ``superseded_by`` (replaced by a retry, regenerate or edit: :mod:`agent.rerun`) is
  never shown.
* The marker of a cut turn (``message_type`` ``interrupted``, :mod:`store.cut_turns`) is shown as its
  visible text. An interrupted answer is left out once a later answer to the same user message
  exists, and in the turn being answered now (a repeated request answers its message again).
* :func:`repair` fixes the copy sent to the model: a tool call without a result gets an error result, a
  result without its call is dropped, leading non-user messages are dropped, and two user messages in
  a row (an unmarked cut turn of data older than the markers) get the marker's text between them.
  The store is never changed.
* :func:`split_turns` / :func:`fit` trim only at user-turn boundaries, so a tool call and its result are
  never separated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence, Set
from dataclasses import dataclass

from agent.providers.base import ChatMessage, ChatRequest, ImagePart, ToolCall, ToolSpec
from store import INTERRUPTED_TEXT, INTERRUPTED_TYPE, Message, MessageStatus, Role

#: tokens every message costs beyond its text (role, separators)
MESSAGE_OVERHEAD = 4
#: tokens a tool call costs beyond its name and arguments
CALL_OVERHEAD = 8
INTERRUPTED_MARK = "[interrupted]"
SUMMARY_TYPE = "summary"
IMAGE_MIN_TOKENS = 85
IMAGE_MAX_TOKENS = 1600
MISSING_RESULT = "error: no result was recorded for this call (the turn was interrupted)"


def estimate_text(text: str) -> int:
    return (len(text) + 3) // 4


def estimate_message(msg: ChatMessage) -> int:
    """The message's token estimate; computed once per message (a turn re-estimates its whole window
    several times, and the window's messages live on in :mod:`agent.prompt.window`)."""
    if msg.tokens >= 0:
        return msg.tokens
    n = MESSAGE_OVERHEAD + estimate_text(msg.content)
    for img in msg.images:
        n += estimate_image(img.width, img.height) if img.data else estimate_text(img.placeholder()) + 1
    for call in msg.tool_calls:
        n += CALL_OVERHEAD + estimate_text(call.name) + estimate_text(call.arguments)
    for block in msg.reasoning:
        n += estimate_text(json.dumps(block))
    object.__setattr__(msg, "tokens", n)  # a memo on a frozen value: same inputs, same answer
    return n


def estimate_messages(messages: Iterable[ChatMessage]) -> int:
    """The estimates of ``messages`` summed, reading each message's memo inline (the whole window
    is summed more than once per turn)."""
    total = 0
    for msg in messages:
        tokens = msg.tokens
        total += tokens if tokens >= 0 else estimate_message(msg)
    return total


def estimate_image(width: int, height: int) -> int:
    """An image's tokens: Anthropic's documented width * height / 750, at most 1,600 (a larger image
    is scaled down by the provider), at least OpenAI's 85 of a low-detail image."""
    return max(IMAGE_MIN_TOKENS, min(IMAGE_MAX_TOKENS, -(-max(width, 1) * max(height, 1) // 750)))


def estimate_tools(tools: Sequence[ToolSpec]) -> int:
    return sum(estimate_tool(t) for t in tools)


def estimate_tool(tool: ToolSpec) -> int:
    """A tool's token estimate, computed once per spec (its schema is encoded to measure it)."""
    if tool.tokens >= 0:
        return tool.tokens
    n = (
        CALL_OVERHEAD
        + estimate_text(tool.name)
        + estimate_text(tool.description)
        + estimate_text(json.dumps(tool.parameters))
    )
    object.__setattr__(tool, "tokens", n)  # a memo on a frozen value
    return n


def estimate_request(request: ChatRequest) -> int:
    return estimate_text(request.system) + estimate_messages(request.messages) + estimate_tools(request.tools)


class TokenCalibrator:
    """Corrects the character-based estimate with what the provider actually counted, per model.

    Kept in memory only: a restart starts from the plain estimate and converges after one call.
    """

    MIN_RATIO = 0.25
    MAX_RATIO = 4.0

    def __init__(self) -> None:
        self._ratio: dict[str, float] = {}

    def ratio(self, model: str) -> float:
        return self._ratio.get(model, 1.0)

    def corrected(self, model: str, estimate: int) -> int:
        return int(estimate * self.ratio(model))

    def observe(self, model: str, estimate: int, reported: int) -> None:
        if estimate <= 0 or reported <= 0:
            return
        seen = min(max(reported / estimate, self.MIN_RATIO), self.MAX_RATIO)
        old = self._ratio.get(model)
        # a moving average: one odd response (cached prompt, server quirk) should not swing the budget
        self._ratio[model] = seen if old is None else 0.7 * old + 0.3 * seen


# -- stored messages -> model messages ----------------------------------------------------------


def calls_from_json(text: str) -> tuple[ToolCall, ...]:
    """The ``tool_calls`` JSON text of a stored message; malformed entries are skipped."""
    if not text:
        return ()
    try:
        raw = json.loads(text)
    except ValueError:
        return ()
    calls: list[ToolCall] = []
    for item in raw if isinstance(raw, list) else ():
        if isinstance(item, dict) and item.get("id") and item.get("name"):
            calls.append(ToolCall(str(item["id"]), str(item["name"]), str(item.get("arguments", ""))))
    return tuple(calls)


def calls_to_json(calls: Iterable[ToolCall], client: Set[str] = frozenset()) -> str:
    """A step's ``tool_calls`` as stored; calls to client tools (ids in ``client``) are marked
    ``"client": true`` (:mod:`agent.client_tools`)."""
    out: list[dict[str, object]] = []
    for c in calls:
        item: dict[str, object] = {"id": c.id, "name": c.name, "arguments": c.arguments}
        if c.id in client:
            item["client"] = True
        out.append(item)
    return json.dumps(out)


def to_chat(msg: Message, *, group: bool = False) -> ChatMessage | None:
    """One stored message as the model sees it (None: nothing to show, e.g. an empty error marker)."""
    if msg.role == Role.USER:
        text = f"{msg.sender}: {msg.content}" if group and msg.sender else msg.content
        return ChatMessage(role="user", content=text, images=images_of(msg))
    if msg.role == Role.TOOL:
        return ChatMessage(
            role="tool",
            content=msg.content,
            tool_call_id=msg.tool_call_id,
            name=msg.name,
            is_error=msg.status == MessageStatus.ERROR,
        )
    if msg.role == Role.ASSISTANT:
        calls = calls_from_json(msg.tool_calls)
        text = msg.content
        if msg.message_type == INTERRUPTED_TYPE:
            return ChatMessage(role="assistant", content=text or INTERRUPTED_TEXT)
        if msg.status != MessageStatus.COMPLETE and not calls:
            if not text.strip():
                return None
            text = f"{text}\n{INTERRUPTED_MARK}"
        raw_reasoning = msg.extra.get("reasoning")
        reasoning = (
            tuple(b for b in raw_reasoning if isinstance(b, dict)) if isinstance(raw_reasoning, list) else ()
        )
        return ChatMessage(role="assistant", content=text, tool_calls=calls, reasoning=reasoning)
    return None  # system messages (compaction summaries) go into the system prompt instead


def images_of(msg: Message) -> tuple[ImagePart, ...]:
    """The image descriptors of a stored message's ``attachments`` field (without their bytes)."""
    if not msg.attachments:
        return ()
    try:
        items = json.loads(msg.attachments)
    except ValueError:
        return ()
    return tuple(
        ImagePart(
            str(it.get("id", "")),
            str(it.get("name", "")),
            str(it.get("mime", "")),
            int(it.get("width") or 0),
            int(it.get("height") or 0),
        )
        for it in (items if isinstance(items, list) else ())
        if isinstance(it, dict) and it.get("kind") == "image" and it.get("id")
    )


@dataclass(frozen=True, slots=True)
class History:
    """A conversation's window as the model sees it: the latest summary and the messages after it."""

    summary: str
    messages: list[ChatMessage]
    #: seq of the first stored message of the window (0 when empty) and of the last one
    first_seq: int = 0
    last_seq: int = 0
    #: the token estimate of ``messages`` summed (:func:`estimate_messages`; -1: not counted)
    tokens: int = -1


def history_from(
    stored: Sequence[Message],
    *,
    group: bool = False,
    convert: Callable[[Message, bool], ChatMessage | None] | None = None,
) -> History:
    """The window as the model sees it, derived from the whole window; ``convert`` (default
    :func:`to_chat`) may answer from a cache. A turn extends last turn's derivation instead
    (:mod:`agent.prompt.incremental`), which must give exactly this."""
    summary = ""
    out: list[ChatMessage] = []
    superseded = superseded_answers(stored)
    for m in stored:
        if m.sid in superseded or m.superseded_by:
            continue
        if m.message_type == SUMMARY_TYPE:
            summary = m.content  # the newest summary already covers the older ones
            continue
        chat = convert(m, group) if convert is not None else to_chat(m, group=group)
        if chat is not None:
            out.append(chat)
    messages = repair(out)
    return History(
        summary=summary,
        messages=messages,
        first_seq=stored[0].seq if stored else 0,
        last_seq=stored[-1].seq if stored else 0,
        tokens=estimate_messages(messages),
    )


def superseded_answers(stored: Sequence[Message], *, open_end: bool = True) -> set[str]:
    """Sids of interrupted answers the model should not see: in each user message's group (it and
    what follows up to the next user message), those followed by a later answer, and every one of
    the last group, which the turn now opening answers (again, for a repeated request).

    ``open_end=False``: ``stored`` is followed by a user message (a part of a longer window), so its
    last group is not the one being answered now and keeps its interrupted answers."""
    out: set[str] = set()
    pending: list[str] = []  # interrupted answers of the current group, not superseded yet
    for m in stored:
        role = m.role
        if role == _USER:
            if pending:
                pending = []
        elif role == _ASSISTANT and not m.tool_calls:
            if m.status == _INTERRUPTED:
                pending.append(m.sid)
            elif pending:
                out.update(pending)
                pending = []
    return out | set(pending) if open_end else out


# plain strings: a stored message's role and status are ``str``, and comparing one with a StrEnum
# member is several times slower than with a str (this runs over the whole window every turn)
_USER = Role.USER.value
_ASSISTANT = Role.ASSISTANT.value
_INTERRUPTED = MessageStatus.INTERRUPTED.value


# -- repair and trimming ------------------------------------------------------------------------


def repair(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """A copy that every provider accepts: each tool call answered right after its assistant message,
    no orphan tool results, and a user message first."""
    out: list[ChatMessage] = []
    open_calls: dict[str, ToolCall] = {}
    for msg in messages:
        if msg.role == "tool":
            if msg.tool_call_id in open_calls:
                del open_calls[msg.tool_call_id]
                out.append(msg)
            continue  # an orphan result (its call was trimmed or never stored)
        if open_calls:
            _answer_missing(out, open_calls)
        if not out and msg.role != "user":
            continue
        if msg.role == "user" and out and out[-1].role == "user":
            out.append(ChatMessage(role="assistant", content=INTERRUPTED_TEXT))
        out.append(msg)
        if msg.tool_calls:
            open_calls = {c.id: c for c in msg.tool_calls}
    if open_calls:
        _answer_missing(out, open_calls)
    return out


def _answer_missing(out: list[ChatMessage], open_calls: dict[str, ToolCall]) -> None:
    for call in open_calls.values():
        out.append(
            ChatMessage(
                role="tool", content=MISSING_RESULT, tool_call_id=call.id, name=call.name, is_error=True
            )
        )
    open_calls.clear()


def split_turns(messages: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
    """Group messages into turns, each starting at a user message (anything before the first is dropped)."""
    turns: list[list[ChatMessage]] = []
    for msg in messages:
        if msg.role == "user":
            turns.append([msg])
        elif turns:
            turns[-1].append(msg)
    return turns


def fit(
    messages: Sequence[ChatMessage], budget: int, ratio: float = 1.0, *, tokens: int = -1
) -> list[ChatMessage]:
    """The newest whole turns whose estimate fits ``budget``; the last turn is always kept.

    The kept turns are a suffix of ``messages`` starting at a user message: one pass from the end
    finds where it starts (messages before the first user message never make a turn). ``tokens``,
    when the caller knows it, is :func:`estimate_messages` of ``messages``: a window that fits
    whole (the common case) is then answered without the pass."""
    if tokens >= 0 and (not messages or messages[0].role == "user") and fits_whole(tokens, ratio, budget):
        return list(messages)
    start = len(messages)
    used = 0
    turn_cost = 0
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        tokens = msg.tokens  # the memo read inline: this loop runs over the whole window per call
        turn_cost += tokens if tokens >= 0 else estimate_message(msg)
        if msg.role != "user":
            continue
        cost = int(turn_cost * ratio)
        if start < len(messages) and used + cost > budget:
            break
        start, used, turn_cost = i, used + cost, 0
    return list(messages[start:])


def fits_whole(tokens: int, ratio: float, budget: int) -> bool:
    """Whether messages estimated at ``tokens`` in all fit ``budget`` as :func:`fit` counts them:
    there each turn's cost is ``int(turn_tokens * ratio)``, whose sum is at most ``tokens * ratio``
    up to float rounding (relative 1e-16 per product; the margin covers it)."""
    return tokens * ratio * (1 + 1e-9) <= budget


def history_budget(context_window: int, max_output_tokens: int, fixed: int) -> int:
    """Tokens left for history once the output reserve and the fixed part (system, tools) are taken."""
    return max(context_window - max_output_tokens - fixed, 256)
