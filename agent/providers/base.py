"""The provider seam: one internal message format and one small ABC every LLM adapter implements.

Adapters (``openai``, ``anthropic``) translate :class:`ChatRequest` to their wire format and their
stream back to :data:`ProviderEvent` values, hiding every difference between servers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    #: JSON text of the arguments object, exactly as the model produced it (may be invalid JSON)
    arguments: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image of a user message. With ``data`` it goes to the model as an image; without (older
    turns, or a model that cannot see) as its :meth:`placeholder` text."""

    id: str
    name: str
    mime: str
    width: int
    height: int
    data: bytes = field(default=b"", repr=False)

    def placeholder(self) -> str:
        return f"[image: {self.name}, {self.width}x{self.height}, {self.id}]"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message in the internal format. ``role`` is system|user|assistant|tool."""

    role: str
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    #: for role=tool: the call this result answers, and the tool's name
    tool_call_id: str = ""
    name: str = ""
    #: opaque provider blocks (e.g. Anthropic thinking blocks) passed back unchanged
    reasoning: tuple[dict[str, Any], ...] = ()
    is_error: bool = False
    #: role=user: the message's images (see :class:`ImagePart`)
    images: tuple[ImagePart, ...] = ()
    #: the token estimate, filled in once by ``agent.prompt.history.estimate_message`` (-1: not yet)
    tokens: int = field(default=-1, compare=False, repr=False)
    #: the message as one provider's request JSON, encoded once: ``(provider name, bytes)``; kept in
    #: the window cache with the message, so a turn encodes only its new messages ("": not yet)
    wire: tuple[str, bytes] = field(default=("", b""), compare=False, repr=False)


def text_with_placeholders(msg: ChatMessage) -> str:
    """The message's text followed by the placeholder of every image not sent as an image."""
    marks = [img.placeholder() for img in msg.images if not img.data]
    return "\n".join([msg.content, *marks]) if marks and msg.content else "\n".join(marks) or msg.content


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    #: JSON Schema of the arguments object
    parameters: dict[str, Any]
    #: memos, as :class:`ChatMessage`'s: the token estimate (-1: not yet) and the tool as one
    #: provider's request JSON; the registry hands out the same specs turn after turn
    tokens: int = field(default=-1, compare=False, repr=False)
    wire: tuple[str, bytes] = field(default=("", b""), compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Sampling:
    """Generation parameters a client asked for, for each model call of its turn (the OpenAI-compatible
    endpoint passes them through; docs/web.md has the table of what each provider makes of them)."""

    stop: tuple[str, ...] = ()
    top_p: float | None = None
    seed: int | None = None
    #: OpenAI's ``response_format`` object (``{"type": "json_object"}``, ``{"type": "json_schema", ...}``)
    response_format: dict[str, Any] | None = None
    #: OpenAI's ``tool_choice`` ("auto", "none", "required" or ``{"type": "function", ...}``)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    system: str
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int = 4096
    temperature: float | None = None
    sampling: Sampling = field(default_factory=Sampling)


# -- what a provider's stream yields --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextChunk:
    """Streamed text: one or more of the server's text events (those read together are joined)."""

    text: str


@dataclass(slots=True)
class TextStats:
    """Process-wide counts of streamed text, for ``/metrics``: ``events`` text events read from the
    LLM servers, handed on as ``chunks`` :class:`TextChunk` (the events of one read joined), which
    reach channels as ``deltas`` ``TextDelta`` events (those waiting for a busy consumer joined: see
    ``agent.events.joined_deltas``; one SSE ``delta`` each on the web)."""

    events: int = 0
    chunks: int = 0
    deltas: int = 0

    def handed_on(self, events: int) -> None:
        self.events += events
        self.chunks += 1


#: the counts of every provider of this process (plain ints, bumped on the event loop)
TEXT_STATS = TextStats()


@dataclass(frozen=True, slots=True)
class ToolCallsReady:
    """Every tool call of this response, fully assembled, in call order (emitted once, at the end)."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True, slots=True)
class ReasoningBlock:
    block: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UsageReport:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The response ended properly. ``finish_reason`` is normalised: stop|tool_calls|length|error."""

    finish_reason: str
    model: str = ""


@dataclass(frozen=True, slots=True)
class RetryNotice:
    """The retry layer is about to wait ``delay_s`` and try again (never yielded by an adapter): channels
    show it while the user waits for a first token. ``attempt`` counts from 1 up to ``max_retries``."""

    attempt: int
    max_retries: int
    delay_s: float
    #: one user-safe line: why the last attempt failed
    reason: str


ProviderEvent: TypeAlias = TextChunk | ToolCallsReady | ReasoningBlock | UsageReport | StreamEnd | RetryNotice


class Provider(ABC):
    """An LLM backend. ``stream`` yields events and ends with exactly one :class:`StreamEnd`; a stream
    cut before its final event raises :class:`~agent.errors.ProviderError` (never a partial answer)."""

    name: str = "provider"

    @abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]: ...

    async def aclose(self) -> None:
        return None

    async def ping(self) -> None:
        """Raise ProviderError when the provider cannot be reached (used by readiness checks)."""
        return None

    def refused_parameter(self, sampling: Sampling) -> str:
        """The name of a parameter of ``sampling`` this provider has no equivalent for ("" when it
        can honour them all): the OpenAI endpoint answers 400 naming it before the turn starts."""
        return ""

    async def list_models(self) -> list[str] | None:
        """The models the server offers (``init`` lists them, ``doctor`` checks ``llm.model``), or None
        when it cannot say. Raises ProviderError when unreachable or the key is refused."""
        return None


@dataclass(slots=True)
class CollectedResponse:
    """A whole response gathered from a stream (tests, memory extraction, compaction)."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    model: str = ""
    #: the text chunks taken so far; :meth:`finish` joins them into ``text``
    chunks: list[str] = field(default_factory=list, repr=False, compare=False)

    def take(self, ev: ProviderEvent) -> None:
        """Gather one stream event (a retry notice is for the caller to announce: nothing is kept)."""
        if isinstance(ev, TextChunk):
            self.chunks.append(ev.text)
        elif isinstance(ev, ToolCallsReady):
            self.tool_calls = ev.calls
        elif isinstance(ev, ReasoningBlock):
            self.reasoning.append(ev.block)
        elif isinstance(ev, UsageReport):
            self.prompt_tokens, self.completion_tokens = ev.prompt_tokens, ev.completion_tokens
        elif isinstance(ev, StreamEnd):
            self.finish_reason, self.model = ev.finish_reason, ev.model

    def finish(self) -> CollectedResponse:
        """The response once the stream ended: its text is the chunks joined."""
        self.text = "".join(self.chunks)
        return self


async def collect(provider: Provider, request: ChatRequest) -> CollectedResponse:
    """The whole response of one call, gathered (no usage entry: see :class:`agent.llm.LLM`)."""
    out = CollectedResponse()
    async for ev in provider.stream(request):
        out.take(ev)
    return out.finish()
