"""What a client asks of one turn besides its message: generation parameters and its own system text.

The OpenAI-compatible endpoint fills these from the request body; every other channel uses the
defaults (the configured ``[llm]`` values, no client system text, no client tools). ``max_tokens``
and ``stop`` apply to every model call of the turn (a turn with tool calls makes several).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.providers.base import Sampling, ToolSpec
from store import Message, Role

#: ``message_type`` of a stored client system message (role ``system``; never shown as history)
CLIENT_SYSTEM_TYPE = "client_system"


@dataclass(frozen=True, slots=True)
class TurnOptions:
    sampling: Sampling = field(default_factory=Sampling)
    #: at most this many output tokens per model call (capped by ``llm.max_output_tokens``)
    max_tokens: int | None = None
    #: None: the configured ``llm.temperature``
    temperature: float | None = None
    #: the client's system message: sent after the agent's own instructions and recalled memories,
    #: and stored with the conversation (a ``system`` message of type ``client_system``)
    system: str = ""
    #: the client's own tools (``tools`` of the request): offered to the model beside the agent's; a
    #: call to one ends the turn, handing it to the client (:mod:`agent.client_tools`)
    client_tools: tuple[ToolSpec, ...] = ()


def client_system_changed(window: Sequence[Message], text: str) -> bool:
    """True when ``text`` is not already the newest stored client system message of the window."""
    for m in reversed(window):
        if m.role == Role.SYSTEM and m.message_type == CLIENT_SYSTEM_TYPE and not m.superseded_by:
            return m.content != text
    return bool(text)
