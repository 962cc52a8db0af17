"""What the model is sent at the start of a turn: the system prompt and the history window.

The system prompt is the configured one, the recalled memories, a note in group chats and the
conversation's compaction summary. The window is the cached history (:mod:`agent.prompt.window`), as
the model sees it (extended from last turn's view: :mod:`agent.prompt.incremental`), repaired
and trimmed to the token budget (:mod:`agent.prompt.history`); when it is over budget the older turns are
compacted first (:mod:`agent.prompt.compaction`), and if that fails the oldest turns are simply left out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import structlog

from agent.errors import ProviderError
from agent.prompt.history import (
    History,
    estimate_text,
    estimate_tools,
    fit,
    history_budget,
)
from agent.providers.base import ChatMessage, ToolSpec
from agent.turn.input import TurnInput, TurnServices
from store import InvalidInput, Memory, Message, NotFound, Scope, attachment_bytes

log = structlog.get_logger()

#: an image is sent with its own turn and the next two, then as a placeholder
IMAGE_TURNS = 3
GROUP_NOTE = "This is a group chat: each user message starts with the id of its sender."
SUMMARY_HEADER = "Summary of the earlier part of this conversation:"


@dataclass(slots=True)
class Prompt:
    """What the model is sent: the system prompt, the messages, and the token budget the messages
    must fit (the turn trims its older turns to it again before each later call)."""

    system: str
    messages: list[ChatMessage]
    budget: int


async def build_prompt(
    services: TurnServices,
    inp: TurnInput,
    tools: tuple[ToolSpec, ...],
    memories: list[Memory],
    stored: list[Message],
) -> Prompt:
    """The system prompt and the history window for this turn, from the recalled memories and the
    stored window read when the turn was opened; compacts first when over budget."""
    prompt = await _build(services, inp, tools, memories, stored, compact=True)
    assert prompt is not None  # only a build that may not compact gives none
    return prompt


async def draft_prompt(
    services: TurnServices,
    inp: TurnInput,
    tools: tuple[ToolSpec, ...],
    memories: list[Memory],
    stored: list[Message],
) -> Prompt | None:
    """:func:`build_prompt` for a turn's early request (``agent/turn/early.py``), which must write
    nothing: None where that would compact."""
    return await _build(services, inp, tools, memories, stored, compact=False)


async def _build(
    services: TurnServices,
    inp: TurnInput,
    tools: tuple[ToolSpec, ...],
    memories: list[Memory],
    stored: list[Message],
    *,
    compact: bool,
) -> Prompt | None:
    settings = services.settings
    group = inp.group
    history = services.window.history(inp.request.scope, inp.conversation_id, stored, group=group)
    # the client's own system text (the OpenAI endpoint) comes after the agent's instructions
    own = (settings.agent.system_prompt, recall_section(memories), GROUP_NOTE if group else "")
    base = "\n\n".join(x for x in (*own, inp.request.options.system) if x)
    ratio = services.llm.calibrator.ratio(settings.llm.model)
    fixed = estimate_text(base) + estimate_text(history.summary) + estimate_tools(tools)
    budget = history_budget(settings.llm.context_window, settings.llm.max_output_tokens, int(fixed * ratio))
    used = int(history.tokens * ratio)
    if used > budget:
        if not compact:
            return None
        log.info("turn.compacting", estimate=used, budget=budget)
        if await _compact(services, inp, budget):
            history = await _history(services, inp, group)
            fixed = estimate_text(base) + estimate_text(history.summary) + estimate_tools(tools)
            budget = history_budget(
                settings.llm.context_window, settings.llm.max_output_tokens, int(fixed * ratio)
            )
    system = f"{base}\n\n{SUMMARY_HEADER}\n{history.summary}" if history.summary else base
    fitted = fit(history.messages, budget, ratio, tokens=history.tokens)
    messages = await with_images(services, inp.request.scope, fitted)
    # images loaded (a new list) may weigh more than their placeholders: fit again only then
    return Prompt(system, messages if messages is fitted else fit(messages, budget, ratio), budget)


async def with_images(services: TurnServices, scope: Scope, messages: list[ChatMessage]) -> list[ChatMessage]:
    """The images of the newest :data:`IMAGE_TURNS` user messages with their bytes (so an image goes
    to the model with its own turn and the next two); older ones stay placeholders, and so does every
    image when the model cannot see. A missing attachment stays a placeholder too."""
    model = services.settings.llm.model
    if services.media is None or not services.media.vision_on(model):
        return messages
    # the newest user messages, found from the end: the window has ~200 messages and no image most
    # of the time, and the unchanged list goes back as it came (no copy, no second fit)
    users = []
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            users.append(i)
            if len(users) == IMAGE_TURNS:
                break
    out = messages
    for i in reversed(users):
        msg = out[i]
        if not msg.images:
            continue
        if out is messages:
            out = list(messages)
        loaded = []
        for img in msg.images:
            try:
                att = await services.store.attachments.get(scope, img.id)
                loaded.append(replace(img, data=attachment_bytes(att)))
            except (NotFound, InvalidInput):
                loaded.append(img)
        out[i] = replace(msg, images=tuple(loaded), tokens=-1, wire=("", b""))
    return out


def recall_section(memories: list[Memory]) -> str:
    """The recalled memories as the system prompt shows them (empty when there are none)."""
    if not memories:
        return ""
    lines = "\n".join(f"- {m.content}" for m in memories)
    return f"What you remember about the user from earlier conversations:\n{lines}"


async def _compact(services: TurnServices, inp: TurnInput, budget: int) -> bool:
    try:
        return await services.compactor.compact(
            inp.request.scope, inp.conversation_id, inp.request.channel, budget=budget
        )
    except ProviderError as exc:
        # the answer matters more than the summary: fall back to trimming the oldest turns
        log.warning("turn.compaction_failed", error=str(exc))
        return False


async def _history(services: TurnServices, inp: TurnInput, group: bool) -> History:
    stored = await services.window.window(inp.request.scope, inp.conversation_id)
    return services.window.history(inp.request.scope, inp.conversation_id, stored, group=group)
