"""Typed events of a turn, rendered by every channel.

A turn's stream is: ``TurnStarted``, then any of ``TextDelta``/``ToolStarted``/``ToolFinished``/
``UsageInfo``/``Retrying``, then exactly one of ``Done`` or ``TurnFailed``. A slash command yields one
``CommandOutput`` instead.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeAlias

import anyio

from agent.providers.base import TEXT_STATS, ToolCall
from config.errors import describe_error


@dataclass(frozen=True, slots=True)
class TurnStarted:
    conversation_id: str
    user_message_id: str
    turn_id: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolStarted:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolFinished:
    call_id: str
    name: str
    ok: bool
    summary: str
    duration_ms: float


@dataclass(frozen=True, slots=True)
class UsageInfo:
    model: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Retrying:
    """The provider failed transiently and is tried again after ``delay_s`` (before any text of that
    call was shown): "retrying (``attempt``/``max_retries``)". ``reason`` is one user-safe line."""

    attempt: int
    max_retries: int
    delay_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class Done:
    conversation_id: str
    #: the final assistant message's id
    message_id: str
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    #: the turn ended handing these client tool calls to the client (``message_id`` is the step that
    #: made them; the turn continues when their results come back: :mod:`agent.client_tools`)
    client_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class TurnFailed:
    """The turn failed or was cancelled: an error's description (its ``code`` and the one sentence a
    user is shown, see :mod:`config.errors`), made by :meth:`of`."""

    code: str
    message: str
    conversation_id: str = ""

    @classmethod
    def of(cls, error: BaseException, conversation_id: str = "") -> TurnFailed:
        """The event describing ``error`` (any exception: one outside the error trees is ``internal``)."""
        code, message = describe_error(error)
        return cls(code, message, conversation_id)


@dataclass(frozen=True, slots=True)
class CommandOutput:
    """The result of a slash command: ``text`` for humans, ``data`` for APIs."""

    command: str
    text: str
    ok: bool = True
    data: dict[str, Any] = field(default_factory=dict)
    conversation_id: str = ""


TurnEvent: TypeAlias = (
    TurnStarted
    | TextDelta
    | ToolStarted
    | ToolFinished
    | UsageInfo
    | Retrying
    | Done
    | TurnFailed
    | CommandOutput
)

#: where a turn's events go (the agent's turn loop emits into one; a channel hands one to the agent)
EventSink: TypeAlias = Callable[[TurnEvent], Awaitable[None]]


class Sinks(NamedTuple):
    """A turn's event sinks: ``emit`` (awaited), and ``now``, the same without a checkpoint, for a
    callback (the events' buffer is unbounded)."""

    emit: EventSink
    now: Callable[[TurnEvent], None]


class TurnEvents:
    """A turn's events on their way from its task to its one consumer: unbounded, in order, and
    without a checkpoint on either side. The task puts with :meth:`send_nowait` and ends with
    :meth:`close`; the consumer takes with :meth:`receive_nowait` or :meth:`receive` until
    ``anyio.EndOfStream``, and calls :meth:`abandon` when it stops early (what is sent after that is
    dropped). anyio's memory object stream did the same job, but its ``receive`` yields to the event
    loop once before it waits and builds a typed waiter each time: three trips through the loop per
    turn that nothing needed (docs/performance.md, "Fewer trips through the event loop per turn").

    A wait in :meth:`receive` is cancellable like any await of a future (an anyio cancel scope
    reaches it)."""

    __slots__ = ("_abandoned", "_closed", "_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[TurnEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._abandoned = False

    def send_nowait(self, event: TurnEvent) -> None:
        """Queue ``event`` (dropped once the consumer has abandoned the turn or the task closed)."""
        if self._closed or self._abandoned:
            return
        self._items.append(event)
        self._wake()

    def close(self) -> None:
        """No more events: the consumer gets ``anyio.EndOfStream`` after the queued ones."""
        self._closed = True
        self._wake()

    def abandon(self) -> None:
        """The consumer is gone: what is queued or sent later is dropped."""
        self._abandoned = True
        self._items.clear()

    def receive_nowait(self) -> TurnEvent:
        """The next event; ``anyio.WouldBlock`` when none waits, ``anyio.EndOfStream`` at the end."""
        if self._items:
            return self._items.popleft()
        if self._closed:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def receive(self) -> TurnEvent:
        """The next event, waiting for it; ``anyio.EndOfStream`` at the end."""
        while not self._items and not self._closed:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self.receive_nowait()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class WaitingEvents(Protocol):
    """What :func:`joined_deltas` reads the waiting events from."""

    def receive_nowait(self) -> TurnEvent: ...


def joined_deltas(event: TurnEvent, waiting: WaitingEvents) -> list[TurnEvent]:
    """``event`` for a consumer, with the text deltas already waiting right behind it joined into it:
    a consumer that fell behind the model (a loaded daemon relaying many streams) catches up with ONE
    delta -- one SSE event, one socket write -- instead of many; the text is the same. The first
    event that is not a text delta comes after it, unchanged. Counts the deltas handed on
    (``/metrics``: ``hero_text_deltas_total``)."""
    if not isinstance(event, TextDelta):
        return [event]
    parts = [event.text]
    after: list[TurnEvent] = []
    while True:
        try:
            behind = waiting.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
        if not isinstance(behind, TextDelta):
            after.append(behind)
            break
        parts.append(behind.text)
    TEXT_STATS.deltas += 1
    return [event if len(parts) == 1 else TextDelta("".join(parts)), *after]
