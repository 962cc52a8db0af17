"""What the model is sent at the start of a turn: the system prompt and the history window.

The system prompt is the configured one, the recalled memories, a note in group chats and the
conversation's compaction summary. The window is the cached history (:mod:`agent.window`), repaired
and trimmed to the token budget (:mod:`agent.context`); when it is over budget the older turns are
compacted first (:mod:`agent.compaction`), and if that fails the oldest turns are simply left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import structlog

from agent.compaction import Compactor
from agent.context import (
    History,
    estimate_message,
    estimate_text,
    estimate_tools,
    fit,
    history_budget,
    history_from,
)
from agent.errors import ProviderError
from agent.llm import LLM
from agent.media import MediaIntake
from agent.memory import MemoryManager, recall_section
from agent.metrics import Counters
from agent.providers.base import ChatMessage, ToolSpec
from agent.rerun import Rerun
from agent.tools.registry import ToolRegistry
from agent.turn_options import TurnOptions
from agent.window import WindowCache
from config.settings import Settings
from store import Conversation, InvalidInput, Memory, Message, NotFound, Scope, Store, attachment_bytes

log = structlog.get_logger()

#: an image is sent with its own turn and the next two, then as a placeholder
IMAGE_TURNS = 3
GROUP_NOTE = "This is a group chat: each user message starts with the id of its sender."
SUMMARY_HEADER = "Summary of the earlier part of this conversation:"


@dataclass(slots=True)
class TurnParts:
    """What a turn needs from its Agent."""

    settings: Settings
    store: Store
    llm: LLM
    memory: MemoryManager
    compactor: Compactor
    tools: ToolRegistry | None
    window: WindowCache
    media: MediaIntake | None = None
    #: the daemon's named counters (the Agent's ``metrics.counters``)
    counters: Counters = field(default_factory=Counters)


@dataclass(slots=True)
class TurnInput:
    scope: Scope
    conversation_id: str
    channel: str
    text: str
    sender: str = ""
    is_group: bool = False
    request_key: str | None = None
    turn_id: str = ""
    #: a retry, regenerate or edit of the conversation's last user message (``agent/rerun.py``)
    rerun: Rerun | None = None
    options: TurnOptions = field(default_factory=TurnOptions)
    #: the user message's ``attachments`` descriptor (JSON text, "" for text only)
    attachments: str = ""
    #: as read when the turn was opened (None before)
    conversation: Conversation | None = None

    @property
    def group(self) -> bool:
        """A group scope: the request says so, or the conversation belongs to a group."""
        return self.is_group or (self.conversation is not None and self.conversation.is_group)


@dataclass(slots=True)
class TurnContext:
    """What the model is sent: the system prompt, the messages, and the token budget the messages
    must fit (the turn trims its older turns to it again before each later call)."""

    system: str
    messages: list[ChatMessage]
    budget: int


async def build_context(
    parts: TurnParts,
    inp: TurnInput,
    tools: tuple[ToolSpec, ...],
    memories: list[Memory],
    stored: list[Message],
) -> TurnContext:
    """The system prompt and the history window for this turn, from the recalled memories and the
    stored window read when the turn was opened; compacts first when over budget."""
    s = parts.settings
    group = inp.group
    history = history_from(
        stored, group=group, convert=parts.window.converter(inp.scope, inp.conversation_id)
    )
    own = (s.agent.system_prompt, recall_section(memories), GROUP_NOTE if group else "")
    base = "\n\n".join(x for x in (*own, inp.options.system) if x)
    ratio = parts.llm.calibrator.ratio(s.llm.model)
    fixed = estimate_text(base) + estimate_text(history.summary) + estimate_tools(tools)
    budget = history_budget(s.llm.context_window, s.llm.max_output_tokens, int(fixed * ratio))
    used = int(sum(estimate_message(m) for m in history.messages) * ratio)
    if used > budget:
        log.info("turn.compacting", estimate=used, budget=budget)
        if await _compact(parts, inp, budget):
            history = await _history(parts, inp, group)
            fixed = estimate_text(base) + estimate_text(history.summary) + estimate_tools(tools)
            budget = history_budget(s.llm.context_window, s.llm.max_output_tokens, int(fixed * ratio))
    system = f"{base}\n\n{SUMMARY_HEADER}\n{history.summary}" if history.summary else base
    messages = await with_images(parts, inp.scope, fit(history.messages, budget, ratio))
    return TurnContext(system, fit(messages, budget, ratio), budget)


async def with_images(parts: TurnParts, scope: Scope, messages: list[ChatMessage]) -> list[ChatMessage]:
    """The images of the newest :data:`IMAGE_TURNS` user messages with their bytes (so an image goes
    to the model with its own turn and the next two); older ones stay placeholders, and so does every
    image when the model cannot see. A missing attachment stays a placeholder too."""
    model = parts.settings.llm.model
    if parts.media is None or not parts.media.vision_on(model):
        return messages
    out = list(messages)
    users = [i for i, m in enumerate(out) if m.role == "user"][-IMAGE_TURNS:]
    for i in users:
        msg = out[i]
        if not msg.images:
            continue
        loaded = []
        for img in msg.images:
            try:
                att = await parts.store.get_attachment(scope, img.id)
                loaded.append(replace(img, data=attachment_bytes(att)))
            except (NotFound, InvalidInput):
                loaded.append(img)
        out[i] = replace(msg, images=tuple(loaded), tokens=-1)
    return out


async def _compact(parts: TurnParts, inp: TurnInput, budget: int) -> bool:
    try:
        return await parts.compactor.compact(inp.scope, inp.conversation_id, inp.channel, budget=budget)
    except ProviderError as exc:
        # the answer matters more than the summary: fall back to trimming the oldest turns
        log.warning("turn.compaction_failed", error=str(exc))
        return False


async def _history(parts: TurnParts, inp: TurnInput, group: bool) -> History:
    stored = await parts.window.window(inp.scope, inp.conversation_id)
    return history_from(stored, group=group)
