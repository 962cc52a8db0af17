"""A turn's first request sent while its opening waits for the store.

A turn opens with one store call (``store.turns.open``: the lease, the user message, the new messages
and the memories to recall), and used to build and send its request only once that call answered. On
the embedded engine that call queues behind every other write of the process: 200 turns starting at
once wait for 200 openings on the one writer, the last ones for most of their time to first token.

When the writer has a queue (:meth:`~store.engine.Engine.backlog`: the opening would wait) and the turn
can know its request without the opening's answer, it does not wait for it: the request is built from
the window cache (:meth:`~agent.prompt.window.WindowCache.known`) and the turn's own text, and sent
while the opening is on its way to the writer. The memories to recall are the user's known ones
when every memory of theirs is known from an earlier turn (``MemoryManager.known``: the opening
recalls as always and must find the same), else they are read beside the writes
(:meth:`~store.api.memories.Memories.recall`, on a read connection of their own) instead of in the
opening. What the model streams back is held (:class:`EarlyRequest`) and nothing of it goes out, and
nothing is written, until the opening has answered, is durable, and confirmed the guess: then the turn
goes on with the request already under way. It can know it when

* the cache holds the conversation and its window, and no other turn of this process is in it (that
  turn's answer would be missing);
* the turn stores a plain new message: no re-run, no client tool results, no images or voice, no
  client system text, and no request key (Telegram's updates, the OpenAI endpoint's requests, an
  ``Idempotency-Key``: a repeated delivery gets its earlier answer without a model call, and only
  the opening tells a repeat);
* the window fits the budget without compaction (which writes).

The opening confirms the guess when it stored this very message as the only one after the cached
window, in a conversation with the cached window floor, model and group flag: no cut turn was marked,
no other process wrote to it, no ``/clear``, compaction or ``/model`` came in between. Else the early
request is cancelled (its tokens may still be billed) and the turn builds its request as before. A turn
whose opening fails (a busy conversation, a store error) cancels it too, and shows nothing of it.

A turn whose opening would not wait (no queue at the writer: a single turn, or an engine whose calls
do not queue in this process) sends nothing early: its request goes out as soon as the opening
answered, which is as soon as the early request could have.

:data:`EARLY_STATS` counts, for ``/metrics``: the early requests sent, confirmed and discarded (by
reason), and how long the first output of a confirmed one waited for the opening (its commit included):
the part of the store's time a turn still waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from agent.llm import RetrySink, TextSink
from agent.providers.base import ChatRequest, CollectedResponse, RetryNotice
from store import Conversation, Memory, Message, TurnOpening, UsageEntry

if TYPE_CHECKING:
    from agent.prompt.builder import Prompt  # which imports the turn's input, and so the metrics

#: why an early request was discarded
CHANGED = "changed"
DRAFT = "draft"
FAILED = "failed"
REASONS = (CHANGED, DRAFT, FAILED)


@dataclass(slots=True)
class EarlyStats:
    """The process's early requests, for ``/metrics`` (one event loop: plain numbers)."""

    sent: int = 0
    confirmed: int = 0
    discarded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    #: confirmed ones whose first output was there before the opening confirmed it, and that wait
    waited: int = 0
    wait_seconds: float = 0.0

    def lines(self) -> list[str]:
        name = "hero_turn_early_requests_total"
        waits = "hero_turn_early_waits_total"
        seconds = "hero_turn_early_wait_seconds_total"
        return [
            f"# HELP {name} Turn requests sent before the turn's opening answered, by outcome:"
            " confirmed by the opening, or discarded (changed: the opening found other messages or"
            " settings; draft: no request could be built without compacting; failed: the opening"
            " failed) (docs/agent.md).",
            f"# TYPE {name} counter",
            f'{name}{{outcome="sent"}} {self.sent}',
            f'{name}{{outcome="confirmed"}} {self.confirmed}',
            *(f'{name}{{outcome="discarded",reason="{r}"}} {self.discarded[r]}' for r in REASONS),
            f"# HELP {waits} Confirmed early requests whose first output waited for the turn's opening.",
            f"# TYPE {waits} counter",
            f"{waits} {self.waited}",
            f"# HELP {seconds} How long those first outputs waited for the opening (its commit included).",
            f"# TYPE {seconds} counter",
            f"{seconds} {self.wait_seconds:.6f}",
        ]


#: the process's early requests
EARLY_STATS = EarlyStats()
#: the name of the task that drafts and sends an early request (a task dump, or a bench, tells it)
TASK_NAME = "hero-agent-early-request"

_Item = tuple[str, object]  # ("text", str) | ("retry", RetryNotice)
#: drafts the request: (window, conversation, memories) -> (prompt, request), or None
Draft = Callable[[list[Message], Conversation, list[Memory]], Awaitable["tuple[Prompt, ChatRequest] | None"]]
#: sends it: (request, on_text, on_retry, usage entries) -> the response
Call = Callable[[ChatRequest, TextSink, RetrySink, list[UsageEntry]], Awaitable[CollectedResponse]]


class EarlyRequest:
    """One turn's early request: drafted and sent by a task of its own while the turn's opening runs;
    what comes back waits in order until the turn relays it (:meth:`relay`) or discards it."""

    def __init__(self, guessed: Message, conversation: Conversation, known: list[Message]) -> None:
        #: the user message as the request shows it (no sid yet); it becomes the stored one
        self.guessed = guessed
        self.conversation = conversation
        #: the window the request was built on, the guessed message last
        self.window = [*known, guessed]
        self.prompt: Prompt | None = None
        self.request: ChatRequest | None = None
        self._items: list[_Item] = []
        self._result: CollectedResponse | None = None
        self._error: BaseException | None = None
        #: set when the draft ended (no request: ``prompt`` None), and at each new item or the end
        self._news = asyncio.Event()
        self._drafted = asyncio.Event()
        self._ended = False
        #: when the first output (text, a retry notice, the end) came back
        self._first: float | None = None
        self._task: asyncio.Task[None] | None = None
        #: the memories to recall, read beside the opening (which then reads none)
        self._recall: asyncio.Task[list[Memory]] | None = None
        #: or the memories known already, guessed without a read (the opening's recall confirms them)
        self.guessed_memories: list[Memory] | None = None
        #: confirmed or discarded
        self.settled = False

    def start(
        self,
        recall: Coroutine[None, None, list[Memory]] | list[Memory],
        draft: Draft,
        call: Call,
        usage: list[UsageEntry],
    ) -> None:
        """Draft the request with the memories (``recall``: a read beside the writes, or the ones
        known already, :attr:`guessed_memories`, which the opening's own recall must confirm), and
        send it (``call``; ``draft`` answers None when it cannot be built without writing), in tasks
        that start once the caller yields (its opening is queued by then)."""
        EARLY_STATS.sent += 1
        loop = asyncio.get_running_loop()
        if isinstance(recall, list):
            self.guessed_memories = recall
        else:
            self._recall = loop.create_task(recall)
        self._task = loop.create_task(self._run(draft, call, usage), name=TASK_NAME)

    @property
    def recalls_beside(self) -> bool:
        """It reads the turn's memories itself, beside the opening (which then reads none)."""
        return self._recall is not None

    async def memories(self) -> list[Memory]:
        """The memories it drafted with (raising the recall's error). Shielded: a discarded request
        leaves the turn the memories it still needs."""
        if self._recall is not None:
            return await asyncio.shield(self._recall)
        return self.guessed_memories or []

    async def _run(self, draft: Draft, call: Call, usage: list[UsageEntry]) -> None:
        try:
            drafted = await draft(self.window, self.conversation, await self.memories())
        except Exception as exc:  # the turn builds its request itself and meets the error there
            drafted = None
            self._error = exc
        finally:
            self._drafted.set()
        if drafted is None:
            self._end()
            return
        self.prompt, self.request = drafted
        try:
            self._result = await call(self.request, self._text, self._retry, usage)
        except Exception as exc:  # relayed as the call's outcome (a ProviderError, or a bug's error)
            self._error = exc
        self._end()

    async def _text(self, text: str) -> None:
        self._push(("text", text))

    async def _retry(self, notice: RetryNotice) -> None:
        self._push(("retry", notice))

    def _push(self, item: _Item) -> None:
        if self._first is None:
            self._first = time.perf_counter()
        self._items.append(item)
        self._news.set()

    def _end(self) -> None:
        if self._first is None:
            self._first = time.perf_counter()
        self._ended = True
        self._news.set()

    async def drafted(self) -> bool:
        """Whether a request was drafted and sent (waits for the draft)."""
        await self._drafted.wait()
        return self.request is not None

    def confirms(self, opening: TurnOpening, turn_id: str) -> bool:
        """The opening stored this turn's message as the only one after the known window, in the
        conversation as known: the request holds what the turn would send. The opening read the
        messages after the cached window, or (a window of at most ``CATCH_UP`` messages, or none
        cached) the whole window: then its older part must be the known window's newest messages."""
        stored, known = opening.message, self.conversation
        before = self.window[:-1]
        last = before[-1].seq if before else 0
        older = [m.sid for m in opening.window if m.seq <= last]
        newer = [m.sid for m in opening.window if m.seq > last]
        return (
            stored.turn_id == turn_id
            and newer == [stored.sid]
            and (not before or stored.seq == last + 1)
            and len(older) <= len(before)
            and older == [m.sid for m in before[len(before) - len(older) :]]
            and stored.content == self.guessed.content
            and stored.sender == self.guessed.sender
            and stored.attachments == self.guessed.attachments
            and opening.conversation.window_floor == known.window_floor
            and opening.conversation.model == known.model
            and opening.conversation.is_group == known.is_group
        )

    def confirmed(self) -> None:
        self.settled = True
        EARLY_STATS.confirmed += 1

    async def discard(self, reason: str) -> None:
        """Cancel the request (if it was sent) and forget what came back; the recall goes on."""
        self.settled = True
        EARLY_STATS.discarded[reason] += 1
        await _cancel(self._task)
        self._items.clear()

    async def relay(
        self, gate: Callable[[], Awaitable[None]], on_text: TextSink, on_retry: RetrySink
    ) -> CollectedResponse:
        """Hand what came back, in order, to ``on_text`` and ``on_retry`` as it comes, and answer the
        call's response (raising its error). ``gate`` (the opening's commit) is awaited first, once
        the first output is there: how long that output was held is counted in :data:`EARLY_STATS`."""
        relaying = time.perf_counter()
        while self._first is None:
            self._news.clear()
            await self._news.wait()
        await gate()
        first = self._first
        EARLY_STATS.wait_seconds += time.perf_counter() - first
        if first < relaying:
            EARLY_STATS.waited += 1
        sent = 0
        while True:
            while sent < len(self._items):
                kind, value = self._items[sent]
                sent += 1
                if kind == "text":
                    assert isinstance(value, str)
                    await on_text(value)
                else:
                    assert isinstance(value, RetryNotice)
                    await on_retry(value)
            if self._ended:
                break
            self._news.clear()
            await self._news.wait()
        self._items.clear()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    async def close(self) -> None:
        """At the turn's end: cancel what still runs (a failed opening's request, its recall)."""
        await _cancel(self._task)
        await _cancel(self._recall)


async def _cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` if it still runs, and wait for it (shielded: it ends at once)."""
    if task is None:
        return
    if not task.done():
        task.cancel()
    with anyio.CancelScope(shield=True), contextlib.suppress(Exception, asyncio.CancelledError):
        await task  # its outcome is not wanted any more (a recall's error included)
