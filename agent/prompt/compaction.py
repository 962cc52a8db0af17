"""Compaction: the older turns of a long conversation replaced, in the model's view, by a summary.

When a turn's window is over budget (or on ``/compact``), the memories are flushed first (so nothing
worth keeping is lost), then the model summarises the older turns (system prompt marked
``[hero-agent:compaction]``). The summary is persisted as a ``system`` message with
``message_type="summary"`` and the conversation's summary boundary moves to just after the last
summarised message: the store keeps every message, the model sees the summary (in its system prompt)
and the recent turns. The split is always at a user-turn boundary, so a tool call and its result stay
together on one side.
"""

from __future__ import annotations

import itertools

import structlog

from agent.llm import LLM, CallSite
from agent.memory import MemoryManager
from agent.prompt.history import SUMMARY_TYPE, calls_from_json, estimate_text
from agent.providers.base import ChatMessage, ChatRequest
from config.settings import Settings
from store import Message, Role, Scope, Store

log = structlog.get_logger()

COMPACTION_MARKER = "[hero-agent:compaction]"
COMPACTION_PROMPT = f"""{COMPACTION_MARKER}
You compress the earlier part of a conversation between a user and an assistant so it can continue
without it. Write a concise summary that keeps every fact, decision, open question, name, number and
tool result the assistant may still need, and the user's goals and preferences. Plain prose or short
bullet points; no preamble."""

#: share of the history budget the turns kept verbatim may use after an automatic compaction
KEEP_SHARE = 0.4
TOOL_RESULT_CHARS = 500


class Compactor:
    """Summarises the older part of a conversation into a persisted summary message."""

    def __init__(self, store: Store, llm: LLM, memory: MemoryManager, settings: Settings) -> None:
        self.store = store
        self.llm = llm
        self.memory = memory
        self.settings = settings

    async def compact(
        self, scope: Scope, conversation_id: str, channel: str, *, budget: int | None = None
    ) -> bool:
        """Summarise all but the newest turns; False when there is nothing to summarise.

        ``budget`` (tokens of history): keep the newest turns that fit ``KEEP_SHARE`` of it verbatim.
        None (``/compact``): keep only the newest turn.
        """
        stored = await self.store.messages.history(
            scope, conversation_id, limit=self.settings.agent.history_limit
        )
        previous = ""
        body: list[Message] = []
        for m in stored:
            if m.message_type == SUMMARY_TYPE:
                previous = m.content
            else:
                body.append(m)
        starts = [i for i, m in enumerate(body) if m.role == Role.USER]
        if len(starts) < 2:
            return False
        keep_from = _split(body, starts, None if budget is None else int(budget * KEEP_SHARE))
        older = body[:keep_from]
        await self.memory.flush(scope, conversation_id, channel)
        request = ChatRequest(
            model=self.settings.llm.model,
            system=COMPACTION_PROMPT,
            messages=(ChatMessage(role="user", content=self._transcript(previous, older)),),
            max_tokens=min(self.settings.llm.max_output_tokens, 2048),
            temperature=0.0,
        )
        resp = await self.llm.call(request, CallSite(scope, conversation_id, channel))
        summary = resp.text.strip()[: self.store.max_message_chars]
        if not summary:
            log.warning("compaction.empty_summary", conversation=conversation_id)
            return False
        through = older[-1].seq
        await self.store.messages.append(
            scope,
            Message(
                conversation_id=conversation_id,
                role="system",
                content=summary,
                channel=channel,
                message_type=SUMMARY_TYPE,
                model=resp.model,
                prompt_tokens=resp.prompt_tokens,
                completion_tokens=resp.completion_tokens,
                extra={"summary_through": through},
            ),
        )
        await self.store.conversations.set_summary_boundary(scope, conversation_id, through + 1)
        log.info("compaction.done", conversation=conversation_id, summarised=len(older), through=through)
        return True

    def _transcript(self, previous: str, older: list[Message]) -> str:
        lines = [f"Summary so far:\n{previous}\n"] if previous else []
        lines += [_render(m) for m in older]
        text = "\n".join(lines)
        # the transcript itself must fit the model: keep the previous summary and the newest part
        limit = max(self.settings.llm.context_window * 2, 4_000)
        if len(text) > limit:
            head = lines[0] if previous else ""
            text = head + "\n[...]\n" + text[-(limit - len(head)) :]
        return f"Conversation to summarise:\n{text}"


def _split(body: list[Message], starts: list[int], keep_budget: int | None) -> int:
    """Index of the first kept message: a user-turn start, never the first turn (something must be
    summarised), the newest turn always kept."""
    keep_from = starts[-1]
    if keep_budget is None:
        return keep_from
    used = _cost(body[keep_from:])
    for start, end in reversed(list(itertools.pairwise(starts[1:]))):
        cost = _cost(body[start:end])
        if used + cost > keep_budget:
            break
        used += cost
        keep_from = start
    return keep_from


def _cost(messages: list[Message]) -> int:
    return sum(4 + estimate_text(m.content) + estimate_text(m.tool_calls) for m in messages)


def _render(m: Message) -> str:
    if m.role == Role.USER:
        return f"User{f' ({m.sender})' if m.sender else ''}: {m.content}"
    if m.role == Role.TOOL:
        return f"[tool {m.name} result: {m.content[:TOOL_RESULT_CHARS]}]"
    calls = calls_from_json(m.tool_calls)
    called = "".join(f"\n[called {c.name}({c.arguments[:TOOL_RESULT_CHARS]})]" for c in calls)
    return f"Assistant: {m.content}{called}"
