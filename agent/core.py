"""The Agent facade every channel talks to.

``Agent.handle(TurnRequest)`` yields typed events: a slash command gives exactly one
:class:`~agent.events.CommandOutput`; a message gives ``TurnStarted``, text deltas, tool and usage
events, then ``Done`` or ``TurnFailed``.

Why a task and a stream: the turn runs as a task of its own and pushes its events into a
:class:`~agent.events.TurnEvents` queue that ``handle`` iterates. A consumer that stops iterating, is
cancelled or closes the iterator only cancels that task (through the turn's cancel scope) and waits
for its shielded cleanup, so no cancel scope ever spans a ``yield`` (which anyio cannot make safe in
an async generator) and the history is left consistent whatever the consumer does. The task is a
plain asyncio task the Agent keeps until it ends (anyio's ``start_soon`` cost ~20 us more per turn);
it catches everything itself, and ``aclose`` cancels it through its scope and waits for it.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType

import anyio
import structlog
from anyio.abc import TaskGroup

from agent.client_tools import CLIENT_TOOL_CALLS, CLIENT_TOOL_CALLS_HELP
from agent.conversations import Conversations
from agent.errors import AgentClosing, TurnStopped
from agent.events import (
    CommandOutput,
    Done,
    Retrying,
    Sinks,
    TextDelta,
    TurnEvent,
    TurnEvents,
    TurnFailed,
    joined_deltas,
)
from agent.llm import LLM
from agent.media import AudioService, MediaIntake, descriptors
from agent.memory import MemoryManager
from agent.metrics import TurnMetrics
from agent.pairing import Pairing
from agent.prompt.compaction import Compactor
from agent.prompt.window import WindowCache
from agent.providers.base import Provider
from agent.rerun import RERUNS, RERUNS_HELP
from agent.slash_commands import run_command
from agent.stops import watch_for_stop
from agent.tools.registry import ToolRegistry
from agent.turn.input import TurnInput, TurnRequest, TurnServices
from agent.turn.loop import Turn
from config.errors import HeroError
from config.settings import Settings
from store import InvalidInput, NotFound, Scope, Store, StoreError, check_text, validate_sid

__all__ = ["Agent", "TurnRequest"]

log = structlog.get_logger()

#: "/cmd", "/cmd args", "/cmd@botname args"; "/usr/bin ..." is a message, not a command
COMMAND_RE = re.compile(r"^/([A-Za-z][A-Za-z0-9_]*)(?:@\w+)?(?:\s+(.*))?$", re.S)
#: how long ``aclose`` may spend on pending memory extractions
FLUSH_DEADLINE_S = 10.0


@dataclass(slots=True)
class _Running:
    scope: Scope
    cancel_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    conversation_id: str = ""
    #: holds the conversation lock (queued turns wait for it and are not "running")
    active: bool = False
    #: the timer that starts watching for a /stop from another process (agent/stops.py)
    stop_watch: asyncio.TimerHandle | None = None


class Agent:
    """The agent core behind every channel. Use as an async context manager (``open_agent`` does)."""

    def __init__(
        self, settings: Settings, store: Store, provider: Provider, tools: ToolRegistry | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.provider = provider
        self.tools = tools
        self.llm = LLM(provider, store)
        self.memory = MemoryManager(store, self.llm, settings.memory, settings.llm.model)
        self.compactor = Compactor(store, self.llm, self.memory, settings)
        self.window = WindowCache(store, settings.agent.history_limit)
        #: the active conversation per (context, user), new, /clear, /compact
        self.conversations = Conversations(store, self.memory, self.compactor, self.window, settings.agent)
        #: voice and images in (checks, transcription, spoken replies); see agent/media
        self.media = MediaIntake(settings, AudioService(settings.llm))
        self._services = TurnServices(
            settings, store, self.llm, self.memory, self.compactor, tools, self.window, self.media
        )
        self._tg: TaskGroup | None = None
        self._running: list[_Running] = []
        #: the turns' tasks (see the module docstring)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        #: every turn and command of every channel (shown by the web channel's /metrics)
        self.metrics = TurnMetrics(store_engine=store.engine, leases=store.leases.stats)
        if tools is not None:
            self.metrics.tool_results = tools.result_counts
        self.metrics.counters.declare(RERUNS, RERUNS_HELP)
        self.metrics.counters.declare(CLIENT_TOOL_CALLS, CLIENT_TOOL_CALLS_HELP)
        self._services.counters = self.metrics.counters
        #: Telegram pairing codes and identity links (the Telegram channel, the web page)
        self.pairing = Pairing(settings, store)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Agent:
        if self._tg is None:
            tg = anyio.create_task_group()
            await tg.__aenter__()
            self._tg = tg
            self.memory.bind(tg)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop running turns (their cleanup persists what they had), flush pending auto-memory work
        within a deadline, and stop the background tasks. Idempotent."""
        if self._closed or self._tg is None:
            self._closed = True
            return
        self._closed = True
        for running in list(self._running):
            running.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            if self._tasks:  # every turn's task, to its end (its cleanup included)
                await asyncio.wait(set(self._tasks))
            await self.memory.flush_all(FLUSH_DEADLINE_S)
            await self.media.audio.aclose()
        self.memory.bind(None)
        # outside the shield: cancel scopes must be exited in the order they were entered
        tg, self._tg = self._tg, None
        tg.cancel_scope.cancel()
        await tg.__aexit__(None, None, None)

    async def ping(self) -> None:
        """Readiness: raises when the store or the provider cannot be reached."""
        await self.store.engine.ping()
        await self.provider.ping()

    # -- messages and commands ---------------------------------------------------------------------

    def handle(self, req: TurnRequest) -> AsyncIterator[TurnEvent]:
        """A slash command (one CommandOutput) or a turn (TurnStarted ... Done | TurnFailed)."""
        if isinstance(req.text, str) and COMMAND_RE.match(req.text.strip()):
            return self._command_events(req)
        return self.run_turn(req)

    async def _command_events(self, req: TurnRequest) -> AsyncIterator[TurnEvent]:
        started = time.perf_counter()
        code = "internal"
        try:
            out = await self.run_command(req)
            code = ""
            yield out
        except HeroError as exc:
            code = exc.code
            raise
        finally:
            self.metrics.turn_finished(
                req.channel,
                "error" if code else "command",
                seconds=time.perf_counter() - started,
                ttft=None,
                prompt_tokens=0,
                completion_tokens=0,
                error_code=code,
            )

    async def run_command(self, req: TurnRequest) -> CommandOutput:
        return await run_command(self, req)

    async def run_turn(self, req: TurnRequest) -> AsyncIterator[TurnEvent]:
        """Run one turn; see the module docstring for why it is a task feeding a stream."""
        try:
            if self._closed:
                raise AgentClosing
            self.check_request(req)
        except HeroError as refused:
            self.metrics.refused(req.channel, refused.code)
            yield TurnFailed.of(refused, req.conversation_id or "")
            return
        if self._tg is None:
            raise RuntimeError("the Agent is not started: use `async with Agent(...)` or open_agent()")
        events = TurnEvents()
        running = _Running(req.scope)
        self._running.append(running)
        task = asyncio.get_running_loop().create_task(self._turn_task(req, events, running))
        self._tasks.add(task)  # a strong reference until it ends (the loop keeps only a weak one)
        task.add_done_callback(self._tasks.discard)
        try:
            while True:
                try:
                    event = await events.receive()
                except anyio.EndOfStream:
                    break
                for out in joined_deltas(event, events):
                    yield out
        finally:
            events.abandon()
            # a finished turn has nothing left to cancel (and a cancel costs a task repr in anyio);
            # nor to wait for (anyio's wait on a set event still yields to the loop once)
            if not running.done.is_set():
                running.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await running.done.wait()

    @property
    def max_message_chars(self) -> int:
        """The longest message a turn takes: the configured limit, within the store's."""
        return min(self.settings.agent.max_message_chars, self.store.max_message_chars)

    def check_request(self, req: TurnRequest) -> None:
        """The one check of a message before its turn, with the store's rules for its text
        (:func:`store.check_text`): InvalidInput, MessageTooLarge, or MediaError for too many images.
        Channels call it for an early refusal (the web route's 400/413); a turn calls it again."""
        scope: object = req.scope  # typed, but a caller's bug must be an error, not a crash
        if not isinstance(scope, Scope):
            raise InvalidInput("The message has no valid scope.")
        if not req.channel:
            raise InvalidInput("The message has no channel.")
        if not check_text(req.text, self.max_message_chars).strip() and not req.images:
            raise InvalidInput("The message is empty.")
        self.media.check_count(len(req.images), req.channel)

    async def _turn_task(self, req: TurnRequest, events: TurnEvents, running: _Running) -> None:
        try:
            await self._run_turn_task(req, events, running)
        except Exception:
            # a bug outside the turn's own handling must neither leave its consumer waiting forever
            # nor end the task with an error nobody reads (the task is the Agent's, not a group's)
            log.exception("turn.task_crashed")
        finally:
            events.close()
            if running in self._running:
                self._running.remove(running)
            running.done.set()
            if running.stop_watch is not None:
                running.stop_watch.cancel()

    async def _run_turn_task(self, req: TurnRequest, events: TurnEvents, running: _Running) -> None:
        # unique across contexts and daemons: the OpenAI endpoint's completion id is chatcmpl-<turn id>
        turn_id = uuid.uuid4().hex

        ended: list[TurnEvent] = []
        first_text: list[float] = []

        def emit_now(event: TurnEvent) -> None:
            if ended:
                # a failure after Done (e.g. releasing the lock while the store is down) is logged,
                # never a second final event: a stream ends with exactly one Done or TurnFailed
                log.debug("turn.event_after_end", event_type=type(event).__name__)
                return
            if isinstance(event, Done | TurnFailed):
                ended.append(event)
            elif isinstance(event, TextDelta) and not first_text:
                first_text.append(time.perf_counter())
            elif isinstance(event, Retrying):
                self.metrics.retried(req.channel)
            # the consumer may have gone away (the event is dropped); it cancels this task next. No
            # checkpoint here (the buffer is unbounded): the text of chunks read together queues up
            # behind a busy consumer, which then takes it as one delta (joined_deltas)
            events.send_nowait(event)

        async def emit(event: TurnEvent) -> None:
            emit_now(event)

        def on_locked() -> None:
            running.active = True
            if self._tg is not None:  # a /stop sent to another process reaches this turn (agent/stops.py)
                running.stop_watch = watch_for_stop(
                    self._tg,
                    self.store,
                    running.scope,
                    running.conversation_id,
                    cancel_scope=running.cancel_scope,
                    done=running.done,
                )

        started = time.perf_counter()
        running.conversation_id = req.conversation_id or ""
        with structlog.contextvars.bound_contextvars(
            context=req.scope.context, user=req.scope.user_id, channel=req.channel, turn_id=turn_id
        ):
            try:
                with running.cancel_scope:
                    await self._run_resolved(req, running, turn_id, Sinks(emit, emit_now), on_locked)
                if running.cancel_scope.cancelled_caught:
                    await emit(TurnFailed.of(TurnStopped(), running.conversation_id))
            except HeroError as exc:
                if not exc.user_safe:
                    log.warning("turn.failed", error=str(exc), error_type=type(exc).__name__)
                await emit(TurnFailed.of(exc, running.conversation_id))
            except Exception as exc:
                log.exception("turn.crashed")
                await emit(TurnFailed.of(exc, running.conversation_id))
            finally:
                if running in self._running:
                    self._running.remove(running)
                running.done.set()
                final = ended[0] if ended else None
                seconds = time.perf_counter() - started
                self.metrics.turn_ended(
                    req.channel, final, seconds, first_text[0] - started if first_text else None
                )
                log.info(
                    "turn.finished",
                    outcome=final.code if isinstance(final, TurnFailed) else "done" if final else "gone",
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                )

    async def _run_resolved(
        self,
        req: TurnRequest,
        running: _Running,
        turn_id: str,
        sinks: Sinks,
        on_locked: Callable[[], None],
    ) -> None:
        """Resolve the conversation and run the turn in it. An active conversation deleted since it was
        made active (the turn's opening found nothing, and stored nothing) gives way to a new one."""
        running.conversation_id = await self._resolve(req)
        if await self._run_in(req, running.conversation_id, turn_id, sinks, on_locked):
            return
        running.conversation_id = await self.conversations.replace_active(
            req.scope, running.conversation_id, channel=req.channel, is_group=req.is_group
        )
        await self._run_in(req, running.conversation_id, turn_id, sinks, on_locked)

    async def _run_in(
        self,
        req: TurnRequest,
        conversation_id: str,
        turn_id: str,
        sinks: Sinks,
        on_locked: Callable[[], None],
    ) -> bool:
        """The turn in ``conversation_id``; False when that is the active conversation and the store
        no longer has it (nothing was stored). A conversation the request named is NotFound."""
        structlog.contextvars.bind_contextvars(conversation=conversation_id)
        log.info("turn.started", chars=len(req.text))
        inp = TurnInput(req, conversation_id, turn_id)
        turn = Turn(self._services, inp, sinks, on_locked)
        try:
            await self._run_with_attachments(req, inp, turn)
        except NotFound as exc:
            if req.conversation_id is not None or turn.message is not None or exc.kind != "conversation":
                raise
            return False
        return True

    async def _run_with_attachments(self, req: TurnRequest, inp: TurnInput, turn: Turn) -> None:
        """Store the request's images (one batch) before the turn stores its message naming them;
        when the message is not stored after all (missing conversation, busy, store failure,
        cancel, or a replayed request whose earlier message is kept), delete them again."""
        stored: list[str] = []
        if req.images:
            made = await self.store.attachments.add(
                req.scope, inp.conversation_id, list(req.images), channel=req.channel
            )
            stored = [a.sid for a in made]
            for a in made:
                self.media.metrics.stored(req.channel, a.size)
        inp.attachments = descriptors(list(zip(stored, req.images, strict=True)), req.voice)
        kept = False
        try:
            await turn.run()
            kept = turn.message is not None and turn.message.attachments == inp.attachments
        finally:
            if stored and not kept:
                with anyio.CancelScope(shield=True), anyio.move_on_after(FLUSH_DEADLINE_S):
                    try:
                        await self.store.attachments.drop(req.scope, stored)
                    except StoreError as exc:
                        log.warning("turn.attachments_not_dropped", error=str(exc), sids=stored)

    async def _resolve(self, req: TurnRequest) -> str:
        """The conversation's id, without reading the conversation: the store call that opens the turn
        reads it, once, and answers NotFound for a missing or foreign one (before anything is stored).
        A given id is only checked for its form here; else the active one (from the state)."""
        if req.conversation_id is None:
            return await self.conversations.active_id(req.scope, channel=req.channel, is_group=req.is_group)
        return validate_sid(req.conversation_id)

    async def stop_turn(self, scope: Scope, conversation_id: str | None = None) -> bool:
        """Cancel the running turn of a conversation (None: every running turn of this scope, else the
        active conversation's turn in another process). Waits until the turn has cleaned up; False when
        nothing was running. A turn another process runs gets a stop request in the store."""
        hits = [
            r
            for r in self._running
            if r.active
            and r.scope == scope
            and (conversation_id is None or r.conversation_id == conversation_id)
        ]
        for running in hits:
            running.cancel_scope.cancel()
        for running in hits:
            with anyio.fail_after(FLUSH_DEADLINE_S):
                await running.done.wait()
        if hits:
            return True
        # not running here: maybe in another process sharing the store (a web replica, a CLI)
        target = conversation_id or await self.conversations.stored_active_id(scope)
        if not target:
            return False
        return await self.store.stops.request(scope, target, wait_s=FLUSH_DEADLINE_S)

    @property
    def busy(self) -> bool:
        """A turn is running in this Agent."""
        return bool(self._running)

    def is_running(self, scope: Scope, conversation_id: str) -> bool:
        return any(
            r.active and r.scope == scope and r.conversation_id == conversation_id for r in self._running
        )

    # -- conversations (the others are ``self.conversations``, agent/conversations.py) -------------

    async def delete_conversation(self, scope: Scope, conversation_id: str) -> None:
        """Hard delete (the privacy delete); a deleted active conversation leaves no active one."""
        await self.stop_turn(scope, conversation_id)
        await self.store.conversations.delete(scope, conversation_id)
        await self.conversations.forget(scope, conversation_id)
