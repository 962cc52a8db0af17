"""What a turn is given: the channel's request, the turn's input, and the Agent's parts it works with."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.client_tools import ClientResult
from agent.llm import LLM
from agent.media import MediaIntake, VoiceNote
from agent.memory import MemoryManager
from agent.metrics import Counters
from agent.prompt.compaction import Compactor
from agent.prompt.window import WindowCache
from agent.rerun import Rerun
from agent.tools.registry import ToolRegistry
from agent.turn.options import TurnOptions
from config.settings import Settings
from store import Conversation, NewAttachment, Scope, Store


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One message from a channel."""

    scope: Scope
    channel: str
    text: str
    #: None: the user's active conversation in this context (created if none)
    conversation_id: str | None = None
    #: group chats: who sent it (e.g. "tg:123")
    sender: str = ""
    #: the scope is a group: personal memories are never recalled
    is_group: bool = False
    #: idempotency key for the user message (e.g. "tg-update:991")
    request_key: str | None = None
    #: images checked by ``Agent.media`` (stored as attachments with the user message)
    images: tuple[NewAttachment, ...] = ()
    #: the text was transcribed from this voice message
    voice: VoiceNote | None = None
    #: answer the stored user message again, or replace it (``agent/rerun.py``); for a retry or
    #: regenerate ``text`` is that message's text, for an edit the new text
    rerun: Rerun | None = None
    #: generation parameters and the client's system text (the OpenAI endpoint)
    options: TurnOptions = field(default_factory=TurnOptions)
    #: the client's results for tool calls handed to it: the turn continues the conversation's turn
    #: that awaits them instead of answering a new message (``text`` is then unused)
    client_results: tuple[ClientResult, ...] = ()


@dataclass(slots=True)
class TurnServices:
    """The Agent's long-lived parts a turn works with: settings, store, LLM, memory, compaction, tools,
    the window cache and the named counters."""

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
    """One turn's input: the channel's request, resolved to its conversation."""

    request: TurnRequest
    conversation_id: str
    turn_id: str = ""
    #: the user message's ``attachments`` descriptor (JSON text, "" for text only)
    attachments: str = ""
    #: as read when the turn was opened (None before)
    conversation: Conversation | None = None

    @property
    def group(self) -> bool:
        """A group scope: the request says so, or the conversation belongs to a group."""
        return self.request.is_group or (self.conversation is not None and self.conversation.is_group)
