"""The turn loop: one implementation for every channel.

One :class:`Turn` answers one user message in one conversation::

    open the turn, in one store call: lock the conversation (a store lease: also across
    processes), persist the user message, read the new messages and the memories to recall
                                                      -> TurnStarted
    build the request (system prompt, recalled memories, summary, history window)
    loop: stream the model                            -> Retrying..., TextDelta..., UsageInfo
          tool calls? persist them, run them concurrently, persist results in call order
                                                      -> ToolStarted..., ToolFinished...
          calls to client tools? the step's own calls run, then the turn ends handing the client
          calls to the client (agent/client_tools.py)     -> Done(client_calls=...)
          up to ``agent.max_tool_iterations``, then one final call without tools
    persist the final assistant message               -> Done

Cancellation (``/stop``, the consumer going away, the turn deadline) runs a shielded cleanup that
persists the partial reply as ``interrupted`` (or, with no text yet, the interrupted marker of
:mod:`store.cut_turns`) and answers every unanswered tool call, so the history never holds a
dangling call. A provider failure persists an ``error`` marker. A turn cut harder (kill -9, a lost
store) is marked by the store when the conversation's next turn opens, or when a daemon starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import structlog

from agent.client_tools import CLIENT_TOOL_CALLS, ClientResult, awaited, continued_answer, user_of
from agent.errors import ProviderError, ToolResultsRefused, TurnTimedOut, VisionRefused
from agent.events import (
    Done,
    Retrying,
    Sinks,
    TextDelta,
    TurnFailed,
    TurnStarted,
    UsageInfo,
)
from agent.llm import CallSite, RetrySink, TextSink
from agent.prompt.builder import Prompt, build_prompt, draft_prompt
from agent.prompt.history import calls_from_json, calls_to_json, fit
from agent.providers.base import ChatMessage, ChatRequest, CollectedResponse, RetryNotice, ToolCall, ToolSpec
from agent.rerun import RERUNS, Rerun, RerunKind, RerunRefused, to_supersede
from agent.tools.base import ToolCaller, ToolResult
from agent.turn.early import CHANGED, DRAFT, FAILED, EarlyRequest
from agent.turn.input import TurnInput, TurnServices
from agent.turn.options import CLIENT_SYSTEM_TYPE, client_system_changed
from agent.turn.tools import run_calls, signature
from store import (
    CLIENT_NO_RESULT,
    INTERRUPTED_TEXT,
    INTERRUPTED_TYPE,
    Conflict,
    Conversation,
    Memory,
    Message,
    MessageStatus,
    Role,
    StoreError,
    TurnOpening,
    TurnReads,
    UsageEntry,
)

log = structlog.get_logger()

FINAL_NOTE = (
    "You cannot call tools any more in this turn. Answer the user now with what you have, "
    "and say briefly what is still missing."
)
CANCELLED_RESULT = "error: cancelled (the turn was stopped before this tool finished)"
EMPTY_FINAL = "(I could not finish this answer within the allowed number of tool calls.)"
#: the most a cancelled or finished turn spends on its own bookkeeping writes
BOOKKEEPING_DEADLINE_S = 5.0


@dataclass(slots=True)
class _Progress:
    """What has happened so far: the cleanup after a cancel or failure works from this."""

    partial: list[str] = field(default_factory=list)
    #: tool calls persisted in an assistant message whose results are not persisted yet
    pending: list[ToolCall] = field(default_factory=list)
    results: dict[str, ToolResult] = field(default_factory=dict)
    #: how long each finished call ran (ms), stored with its result so a page can show it later
    durations: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    #: usage entries of this turn's calls, written when the turn ends
    usage: list[UsageEntry] = field(default_factory=list)


class Turn:
    """One user message answered; ``run`` emits the events and never raises except for cancellation
    of its caller (store errors are left to the caller to report)."""

    def __init__(
        self,
        services: TurnServices,
        inp: TurnInput,
        sinks: Sinks,
        on_locked: Callable[[], None],
    ) -> None:
        self.services = services
        self.inp = inp
        self.emit = sinks.emit
        #: ``emit`` without a checkpoint, for the commit's callback (:meth:`_announce`)
        self.emit_now = sinks.now
        self.on_locked = on_locked
        #: TurnStarted, until it went out (see :meth:`_announce`)
        self._started: TurnStarted | None = None
        self.progress = _Progress()
        self.site = CallSite(inp.request.scope, inp.conversation_id, inp.request.channel)
        self.cid = inp.conversation_id
        self.memories: list[Memory] = []
        self.stored: list[Message] = []
        #: the stored user message, once the turn is open
        self.message: Message | None = None
        #: the last request sent images (a refusal may be the model's lack of vision)
        self.sent_images = False
        #: the user message this turn answers (set once the turn is open)
        self.user_sid = ""
        #: the store's opening of the turn: its final message closes it (see ``_finish``)
        self.opening: TurnOpening | None = None
        #: the final message is stored and the lease released: nothing is left to settle
        self.finished = False

    async def run(self) -> None:
        inp, services = self.inp, self.services
        rerun = inp.request.rerun
        continuing = bool(inp.request.client_results)
        rerun_of = rerun.user_message_id if rerun is not None else None
        if continuing:
            rerun_of = await self._awaiting_turn()
            if rerun_of is None:
                return
        if rerun_of is not None:
            services.window.forget(inp.request.scope, self.cid)  # the marks below change messages it may hold
        after_seq, window_limit = services.window.plan(inp.request.scope, self.cid)
        recall_text, recall_limit, recent = services.memory.recall_plan(inp.request.text)
        reads = TurnReads(window_limit, after_seq, recall_text, recall_limit, recent)
        with services.window.turn(inp.request.scope, self.cid) as alone:
            early = self._early(reads) if alone and not continuing and rerun_of is None else None
            if early is not None and early.recalls_beside:  # the opening then reads no memories
                reads = dataclasses.replace(reads, recall_text="", recall_limit=0, recent_memories=0)
            try:
                await self._open(reads, early, rerun_of=rerun_of, continuing=continuing)
            finally:
                if early is not None:
                    if not early.settled:
                        await early.discard(FAILED)  # the opening failed: nothing was confirmed
                    await early.close()

    async def _open(
        self, reads: TurnReads, early: EarlyRequest | None, *, rerun_of: str | None, continuing: bool
    ) -> None:
        """Open the turn (one store call) and run it under its lease."""
        agent_cfg, inp, services = self.services.settings.agent, self.inp, self.services
        after_seq = reads.window_after_seq
        try:
            async with services.store.turns.open(
                inp.request.scope,
                self.cid,
                inp.request.text,
                channel=inp.request.channel,
                sender=inp.request.sender,
                request_key=inp.request.request_key,
                attachments=inp.attachments,
                reads=reads,
                early=True,  # the commit's fsync runs while the request is built (see _announce)
                ttl_s=agent_cfg.turn_lock_ttl_s,
                wait_s=agent_cfg.turn_deadline_s,
                turn_id=inp.turn_id,
                rerun_of=rerun_of,
                # a continuation stores the awaited calls' results itself
                mark_cut=not continuing,
            ) as opening:
                self.on_locked()
                self.opening = opening
                inp.conversation = opening.conversation
                # the turn's usage entries (an early request's too) are written when it closes, with
                # the lease's release
                opening.usage = self.progress.usage
                with anyio.move_on_after(agent_cfg.turn_deadline_s) as deadline:
                    # the memories: read beside the opening by the early request (confirmed or
                    # not), else recalled by the opening
                    beside = early if early is not None and early.recalls_beside else None
                    recalled = None if beside is not None else self._recalled(opening, reads)
                    early = await self._confirm(early, opening, recalled)
                    self.message = opening.message
                    self.stored = await services.window.absorb(
                        inp.request.scope, self.cid, after_seq, opening
                    )
                    answered = None if rerun_of else earlier_answer(self.stored, opening.message)
                    if continuing:
                        answered = self._continued_answer()
                        if answered is None and not await self._take_results(inp.request.client_results):
                            return
                    elif answered is None and not await self._settle_earlier(opening.message):
                        return
                    self.user_sid = self.message.sid
                    # a replayed answer shows the turn id it was stored with (the completion id)
                    shown_id = answered.turn_id if answered is not None and answered.turn_id else inp.turn_id
                    self._announce(TurnStarted(self.cid, self.message.sid, shown_id))
                    self._title(opening.conversation)
                    if answered is not None:
                        await self._acknowledged()
                        await self._replay(answered)
                        return
                    await self._store_client_system()
                    self.memories = await beside.memories() if beside is not None else recalled or []
                    await self._turn(early)
                if deadline.cancelled_caught:
                    await self.emit(TurnFailed.of(TurnTimedOut(agent_cfg.turn_deadline_s), self.cid))
        except Conflict as exc:
            await self.emit(TurnFailed.of(exc, self.cid))

    # -- the early request (agent/turn/early.py) ---------------------------------------------------

    def _early(self, reads: TurnReads) -> EarlyRequest | None:
        """The turn's first request, drafted and sent while its opening runs, when the turn can know
        it without the opening's answer (see agent/turn/early.py); None when it cannot."""
        inp, req, services = self.inp, self.inp.request, self.services
        if not services.settings.agent.early_request or services.store.engine.backlog() == 0:
            return None  # off, or the opening would not queue: it answers as soon as the request could
        # a request key may be a repeated delivery, which gets its earlier answer without a model
        # call: none may go out before the opening has told which it is
        if req.request_key is not None or inp.attachments or req.options.system:
            return None
        known = self.services.window.known(req.scope, self.cid)
        if known is None:
            return None
        nxt = known.messages[-1].seq + 1 if known.messages else known.conversation.message_count + 1
        guessed = Message(
            conversation_id=self.cid,
            seq=nxt,
            role=Role.USER.value,
            content=req.text,
            channel=req.channel,
            sender=req.sender,
            turn_id=inp.turn_id,
        )
        early = EarlyRequest(guessed, known.conversation, known.messages)
        inp.conversation = known.conversation  # as the draft sees it; the opening's replaces it

        async def call(
            request: ChatRequest, on_text: TextSink, on_retry: RetrySink, usage: list[UsageEntry]
        ) -> CollectedResponse:
            return await self.services.llm.call(
                request, self.site, on_text, defer_usage=usage, on_retry=on_retry
            )

        recalls = bool(reads.recall_limit or reads.recent_memories)
        # every memory of the user known from an earlier turn: recalled without a read (the opening
        # recalls as always and confirms them); else read beside the writes
        known_memories = services.memory.known(req.scope, req.text) if recalls else []
        recall = known_memories if known_memories is not None else self._recall(reads)
        early.start(recall, self._draft, call, self.progress.usage)
        return early

    async def _recall(self, reads: TurnReads) -> list[Memory]:
        """The memories recalled into the prompt, read beside the turn's opening."""
        if not (reads.recall_limit or reads.recent_memories):
            return []
        scope, memory = self.inp.request.scope, self.services.memory
        matching, recent = await self.services.store.memories.recall(
            scope, reads.recall_text, reads.recall_limit, reads.recent_memories
        )
        if reads.recent_memories:
            memory.read(scope, recent, reads.recent_memories)
        return memory.ranked(matching, recent, self.inp.request.text)

    async def _draft(
        self, window: list[Message], conversation: Conversation, memories: list[Memory]
    ) -> tuple[Prompt, ChatRequest] | None:
        """The early request's prompt and request, as :meth:`_loop` would build them."""
        tools, _ = self._tools()
        prompt = await draft_prompt(self.services, self.inp, tools, memories, window)
        if prompt is None:
            return None
        model = self.services.settings.model_for(conversation.model)
        final = self.services.settings.agent.max_tool_iterations <= 0
        return prompt, self._request(model, prompt.system, prompt.messages, tools, final=final, iteration=0)

    def _recalled(self, opening: TurnOpening, reads: TurnReads) -> list[Memory]:
        """The memories the opening's recall gives the prompt; the user's newest it read are kept
        for the next early request (``MemoryManager.read``)."""
        memory, scope = self.services.memory, self.inp.request.scope
        if reads.recent_memories:
            memory.read(scope, opening.recent_memories, reads.recent_memories)
        return memory.ranked(opening.matching_memories, opening.recent_memories, self.inp.request.text)

    async def _confirm(
        self, early: EarlyRequest | None, opening: TurnOpening, recalled: list[Memory] | None
    ) -> EarlyRequest | None:
        """The early request, when the opening confirms what it was built on (its user message then
        stands for the stored one: the view derived from it stays usable), memories included when
        they were guessed; else it is discarded."""
        if early is None:
            return None
        if not await early.drafted():
            await early.discard(DRAFT)
            return None
        guessed = early.guessed_memories
        if not early.confirms(opening, self.inp.turn_id) or (
            guessed is not None
            and recalled is not None
            and [m.sid for m in guessed] != [m.sid for m in recalled]
        ):
            await early.discard(CHANGED)
            return None
        early.confirmed()
        scope = self.inp.request.scope
        at = next(i for i, m in enumerate(opening.window) if m.sid == opening.message.sid)
        opening.message = opening.window[at] = self.services.window.adopt(
            scope, self.cid, early.guessed, opening.message
        )
        return early

    def _announce(self, started: TurnStarted) -> None:
        """TurnStarted acknowledges the user message (its sid): it goes out once the opening is
        durable. The opening came early (``turns.open(early=True)``): on the embedded engine before
        its commit's fsync, which runs while this turn builds and sends its request. It goes out from
        the commit's callback (the LLM may take long), and at the latest at the gates
        (:meth:`_acknowledged`) before any later event; never before the commit returned."""
        self._started = started
        durable = self.opening.durable if self.opening is not None else None
        if durable is None:
            self._send_started()
        else:
            durable.add_done_callback(self._on_durable)

    def _on_durable(self, durable: asyncio.Future[None]) -> None:
        if not durable.cancelled() and durable.exception() is None:
            self._send_started()

    def _send_started(self) -> None:
        started, self._started = self._started, None
        if started is not None:
            self.emit_now(started)

    async def _acknowledged(self) -> None:
        """The gate before any event after TurnStarted: waits for the opening's commit, then
        TurnStarted goes out if it has not yet."""
        await self._opening_durable()
        started, self._started = self._started, None
        if started is not None:
            await self.emit(started)

    async def _opening_durable(self) -> None:
        """The opening's commit (at once when it is done; raising StoreUnavailable when it failed,
        after dropping the window cache's copy of what it wrote). Also awaited before the few writes
        a turn makes ahead of its request (a re-run's marks, an edit's message, a client's tool
        results or system text): each is a transaction of its own, and none may outlive an opening
        whose commit failed."""
        opening = self.opening
        if opening is not None and opening.durable is not None:
            try:
                await opening.wait_durable()
            except StoreError:
                self.services.window.forget(self.inp.request.scope, self.cid)
                raise

    async def _settle_earlier(self, message: Message) -> bool:
        """Before answering: a re-run (or a repeated request whose earlier answer was cut or failed)
        marks what the earlier attempt left as superseded (:mod:`agent.rerun`); an edit stores its new
        user message. False (and a ``conflict`` error) when the re-run is refused."""
        inp, req = self.inp, self.inp.request
        rerun = req.rerun
        if rerun is None and message.turn_id == inp.turn_id:
            return True  # a new message: nothing came before it
        await self._opening_durable()  # the marks and an edit's message below are writes of their own
        plan = rerun or Rerun(RerunKind.RETRY, message.sid)
        try:
            replaced = to_supersede(self.stored, plan)
        except RerunRefused as exc:
            await self.emit(TurnFailed.of(exc, self.cid))
            return False
        if replaced:
            await self.services.store.messages.supersede(req.scope, [m.sid for m in replaced], inp.turn_id)
            for m in replaced:
                m.superseded_by = inp.turn_id
            log.info("turn.rerun", kind=plan.kind.value, superseded=len(replaced))
        self.services.counters.inc(RERUNS, kind=plan.kind.value, channel=req.channel)
        if plan.kind == RerunKind.EDIT:
            self.message = await self.services.store.messages.append(
                req.scope,
                Message(
                    conversation_id=self.cid,
                    role="user",
                    content=req.text,
                    channel=req.channel,
                    sender=req.sender,
                    turn_id=inp.turn_id,
                ),
            )
            self.stored.append(self.message)
        return True

    async def _awaiting_turn(self) -> str | None:
        """The user message of the turn awaiting the client's tool results, or of the turn that
        already answered them (a continuation sent again); read before the turn opens, checked again
        under its lease. None, with a ``conflict`` error, when neither is there."""
        req = self.inp.request
        page = await self.services.store.messages.list(req.scope, self.cid, limit=100, descending=True)
        recent = list(reversed(page.items))
        step, _ = awaited(recent)
        if step is None and (answer := continued_answer(recent, {r.call_id for r in req.client_results})):
            step = answer  # sent again after it was answered: the answer is replayed
        user = user_of(recent, step) if step is not None else None
        if user is None:
            refused = ToolResultsRefused("No tool calls of this conversation are awaiting results.")
            await self.emit(TurnFailed.of(refused, self.cid))
            return None
        return user.sid

    def _continued_answer(self) -> Message | None:
        """A continuation sent again after its turn answered (a retry after a lost response): that
        answer, replayed like any repeated request's; None when the calls still await results."""
        if awaited(self.stored)[0] is not None:
            return None
        return continued_answer(self.stored, {r.call_id for r in self.inp.request.client_results})

    async def _take_results(self, results: tuple[ClientResult, ...]) -> bool:
        """Store the client's results of the awaited calls (an awaited call it left out gets
        :data:`store.CLIENT_NO_RESULT`); False, with a ``conflict`` error and nothing stored, when a
        result answers no awaited call (another request took them first, or a wrong id)."""
        req = self.inp.request
        await self._opening_durable()  # the results below are writes of their own
        step, waiting = awaited(self.stored)
        given = {r.call_id: r.content for r in results}
        unknown = sorted(set(given) - set(waiting))
        if step is None or unknown:
            message = f"No awaited tool call has the id {', '.join(unknown or sorted(given))}."
            await self.emit(TurnFailed.of(ToolResultsRefused(message), self.cid))
            return False
        names = {c.id: c.name for c in calls_from_json(step.tool_calls)}
        for call_id in waiting:
            content = given.get(call_id)
            msg = await self.services.store.messages.append(
                req.scope,
                Message(
                    conversation_id=self.cid,
                    role="tool",
                    content=self._clip(CLIENT_NO_RESULT if content is None else content),
                    channel=req.channel,
                    tool_call_id=call_id,
                    name=names.get(call_id, ""),
                    status=MessageStatus.ERROR if content is None else MessageStatus.COMPLETE,
                    turn_id=self.inp.turn_id,
                ),
            )
            self.stored.append(msg)
        self.services.counters.inc(CLIENT_TOOL_CALLS, len(given), kind="result", channel=req.channel)
        return True

    async def _store_client_system(self) -> None:
        """The client's system message is stored with the conversation when it is new or changed."""
        req = self.inp.request
        text = req.options.system
        if text and client_system_changed(self.stored, text):
            await self._opening_durable()
            await self.services.store.messages.append(
                req.scope,
                Message(
                    conversation_id=self.cid,
                    role="system",
                    content=self._clip(text),
                    channel=req.channel,
                    message_type=CLIENT_SYSTEM_TYPE,
                    turn_id=self.inp.turn_id,
                ),
            )

    async def _replay(self, answer: Message) -> None:
        """A request whose key was seen before and already answered: the same answer again, no call."""
        log.info("turn.replayed", message=answer.sid)
        await self.emit(TextDelta(answer.content))
        await self.emit(
            Done(
                self.cid,
                answer.sid,
                answer.content,
                answer.prompt_tokens,
                answer.completion_tokens,
                answer.model,
            )
        )

    async def _turn(self, early: EarlyRequest | None = None) -> None:
        try:
            await self._loop(early)
        except anyio.get_cancelled_exc_class():
            if self.finished:
                raise  # cancelled after the answer was stored (while Done was delivered)
            # shielded so the cancel cannot cut the cleanup, bounded so a hung store cannot hold it
            with anyio.CancelScope(shield=True), anyio.move_on_after(BOOKKEEPING_DEADLINE_S):
                await self._settle(MessageStatus.INTERRUPTED)
            raise
        except ProviderError as exc:
            await self._acknowledged()
            await self._settle(MessageStatus.ERROR)
            if self._vision_refused(exc):
                refused = VisionRefused(self.services.settings.llm.model, exc)
                await self.emit(TurnFailed.of(refused, self.cid))
                return
            await self.emit(TurnFailed.of(exc, self.cid))
        except StoreError:
            raise
        except Exception:
            with anyio.CancelScope(shield=True), anyio.move_on_after(BOOKKEEPING_DEADLINE_S):
                await self._settle(MessageStatus.ERROR)
            raise

    def _vision_refused(self, exc: ProviderError) -> bool:
        """Under ``vision = "auto"`` a client error (4xx but auth, quota, rate) answering a request
        with images is taken as the model's refusal of images; it then sees placeholders until restart."""
        media = self.services.media
        if media is None or not self.sent_images or self.services.settings.llm.vision != "auto":
            return False
        if exc.status is None or not 400 <= exc.status < 500 or exc.status in (401, 403, 404, 408, 409, 429):
            return False
        media.blind_models.add(self.services.settings.llm.model)
        log.info("turn.vision_refused", model=self.services.settings.llm.model, status=exc.status)
        return True

    def _title(self, conv: Conversation) -> None:
        """A new conversation is named after its first message, in the batch that closes the turn:
        no durable write of its own on the way to the first token."""
        if conv.title or self.opening is None:
            return
        text = self.inp.request.text.strip()
        title = text.splitlines()[0][:60] if text else ""
        if title.isprintable():
            self.services.store.turns.title_on_close(self.opening, title)

    # -- the loop ----------------------------------------------------------------------------------

    def _tools(self) -> tuple[tuple[ToolSpec, ...], set[str]]:
        """The tools the model is offered (the agent's, then the client's) and the client's names."""
        opts = self.inp.request.options
        own = self.services.tools.specs() if self.services.tools is not None else ()
        return own + opts.client_tools, {t.name for t in opts.client_tools}

    def _request(
        self,
        model: str,
        system: str,
        messages: list[ChatMessage],
        tools: tuple[ToolSpec, ...],
        *,
        final: bool,
        iteration: int,
    ) -> ChatRequest:
        llm_cfg, opts = self.services.settings.llm, self.inp.request.options
        return ChatRequest(
            model=model,
            system=f"{system}\n\n{FINAL_NOTE}" if final and iteration else system,
            messages=tuple(messages),
            tools=() if final else tools,
            # a client's max_tokens applies to each model call, capped by the configured one
            max_tokens=min(opts.max_tokens or llm_cfg.max_output_tokens, llm_cfg.max_output_tokens),
            temperature=llm_cfg.temperature if opts.temperature is None else opts.temperature,
            sampling=opts.sampling,
        )

    async def _loop(self, early: EarlyRequest | None) -> None:
        agent_cfg = self.services.settings.agent
        # the conversation's /model choice (stored with it), else the configured model
        model = self.services.settings.model_for(self.inp.conversation.model if self.inp.conversation else "")
        tools, client_names = self._tools()
        if early is not None and early.prompt is not None:
            prompt = early.prompt  # built on what the opening confirmed
        else:
            prompt = await build_prompt(self.services, self.inp, tools, self.memories, self.stored)
        system, messages = prompt.system, prompt.messages
        previous: set[tuple[str, str]] = set()
        force_final = False
        iteration = 0
        while True:
            final = force_final or iteration >= agent_cfg.max_tool_iterations
            if iteration:
                # tool results grow the request: older turns make room (never the current one)
                messages = self._refit(messages, prompt.budget)
            sending = early if not iteration else None
            if sending is not None and sending.request is not None:
                request = sending.request  # already on its way
            else:
                request = self._request(model, system, messages, tools, final=final, iteration=iteration)
            # most messages carry no image: look at their images only where there are some
            self.sent_images = any(img.data for m in request.messages if m.images for img in m.images)
            resp = await self._call(request, sending)
            if not resp.tool_calls or final:
                await self._finish(resp)
                return
            client = {c.id for c in resp.tool_calls if c.name in client_names}
            step = await self._persist_calls(resp, client)
            messages.append(
                ChatMessage(
                    role="assistant",
                    content=resp.text,
                    tool_calls=resp.tool_calls,
                    reasoning=tuple(resp.reasoning),
                )
            )
            # the agent's own calls run here; the client's are handed to the client after them
            calls = tuple(c for c in resp.tool_calls if c.id not in client)
            signatures = {signature(c) for c in calls}
            repeated = {c.id for c in calls if signature(c) in previous}
            results = await self._run_tools(calls, repeated) if calls else []
            for call, result in zip(calls, results, strict=True):
                await self._persist_result(call, result)
                messages.append(
                    ChatMessage(
                        role="tool",
                        content=result.content,
                        tool_call_id=call.id,
                        name=call.name,
                        is_error=not result.ok,
                    )
                )
            if client:
                await self._hand_over(step, resp, tuple(c for c in resp.tool_calls if c.id in client))
                return
            if repeated:
                log.info(
                    "turn.repeated_call_stopped", tools=sorted({c.name for c in calls if c.id in repeated})
                )
                force_final = True
            previous = signatures
            iteration += 1

    def _refit(self, messages: list[ChatMessage], budget: int) -> list[ChatMessage]:
        kept = fit(messages, budget, self.services.llm.calibrator.ratio(self.services.settings.llm.model))
        if len(kept) < len(messages):
            log.info("turn.trimmed", dropped=len(messages) - len(kept), budget=budget)
        return kept

    async def _call(self, request: ChatRequest, early: EarlyRequest | None = None) -> CollectedResponse:
        progress = self.progress
        progress.partial.clear()

        async def on_text(text: str) -> None:
            progress.partial.append(text)
            if self._started is not None or (self.opening is not None and self.opening.durable is not None):
                await self._acknowledged()
            await self.emit(TextDelta(text))

        async def on_retry(notice: RetryNotice) -> None:
            await self._acknowledged()
            await self.emit(Retrying(notice.attempt, notice.max_retries, notice.delay_s, notice.reason))

        if early is not None:
            resp = await early.relay(self._acknowledged, on_text, on_retry)
        else:
            resp = await self.services.llm.call(
                request, self.site, on_text, defer_usage=progress.usage, on_retry=on_retry
            )
        await self._acknowledged()
        progress.prompt_tokens += resp.prompt_tokens
        progress.completion_tokens += resp.completion_tokens
        progress.model = resp.model
        await self.emit(UsageInfo(resp.model, resp.prompt_tokens, resp.completion_tokens))
        return resp

    async def _run_tools(self, calls: tuple[ToolCall, ...], repeated: set[str]) -> list[ToolResult]:
        inp = self.inp
        ctx = ToolCaller(self.services.store, inp.request.scope, self.cid, inp.request.channel, inp.group)

        def on_result(call: ToolCall, result: ToolResult, ms: float) -> None:
            self.progress.results[call.id] = result
            self.progress.durations[call.id] = ms

        return await run_calls(
            self.services.tools,
            calls,
            ctx,
            self.services.settings.agent,
            repeated=repeated,
            emit=self.emit,
            on_result=on_result,
        )

    # -- persistence -------------------------------------------------------------------------------

    async def _hand_over(self, step: Message, resp: CollectedResponse, calls: tuple[ToolCall, ...]) -> None:
        """End the turn handing the client calls to the client: stored as awaited (the step holds
        them, with no result), answered by the client's next request."""
        progress, req = self.progress, self.inp.request
        progress.partial.clear()
        self.services.counters.inc(CLIENT_TOOL_CALLS, len(calls), kind="returned", channel=req.channel)
        log.info("turn.client_tool_calls", tools=sorted({c.name for c in calls}))
        await self.emit(
            Done(
                self.cid,
                step.sid,
                resp.text,
                progress.prompt_tokens,
                progress.completion_tokens,
                resp.model,
                client_calls=calls,
            )
        )

    async def _persist_calls(self, resp: CollectedResponse, client: set[str]) -> Message:
        """The step with its calls (client calls marked); the agent's own calls are now pending."""
        step = await self._append(
            Message(
                conversation_id=self.cid,
                role="assistant",
                content=self._clip(resp.text),
                channel=self.inp.request.channel,
                tool_calls=calls_to_json(resp.tool_calls, client),
                model=resp.model,
                prompt_tokens=resp.prompt_tokens,
                completion_tokens=resp.completion_tokens,
                extra={"reasoning": list(resp.reasoning)} if resp.reasoning else {},
                turn_id=self.inp.turn_id,
            ),
        )
        self.progress.partial.clear()
        self.progress.pending = [c for c in resp.tool_calls if c.id not in client]
        self.progress.results.clear()
        self.progress.durations.clear()
        return step

    async def _persist_result(self, call: ToolCall, result: ToolResult) -> None:
        ms = self.progress.durations.get(call.id)
        await self._append(
            Message(
                conversation_id=self.cid,
                role="tool",
                content=self._clip(result.content),
                channel=self.inp.request.channel,
                tool_call_id=call.id,
                name=call.name,
                status=MessageStatus.COMPLETE if result.ok else MessageStatus.ERROR,
                extra={"duration_ms": ms} if ms is not None else {},
                turn_id=self.inp.turn_id,
            ),
        )
        self.progress.pending = [c for c in self.progress.pending if c.id != call.id]

    async def _finish(self, resp: CollectedResponse) -> None:
        progress = self.progress
        # a final call may still answer with tool calls only (no tools offered, a stubborn model)
        text = resp.text or (EMPTY_FINAL if resp.tool_calls else "")
        assert self.opening is not None  # the loop runs inside the opened turn
        # one batch: the message, the turn's usage entries and the lease's release (one commit)
        msg = await self.services.store.turns.finish(
            self.opening,
            Message(
                conversation_id=self.cid,
                role="assistant",
                content=self._clip(text),
                channel=self.inp.request.channel,
                model=resp.model,
                status=MessageStatus.COMPLETE,
                prompt_tokens=progress.prompt_tokens,
                completion_tokens=progress.completion_tokens,
                extra={"reasoning": list(resp.reasoning)} if resp.reasoning else {},
                turn_id=self.inp.turn_id,
            ),
        )
        progress.partial.clear()
        self.finished = True
        self.services.window.appended(self.inp.request.scope, self.cid, msg)
        await self.emit(
            Done(self.cid, msg.sid, text, progress.prompt_tokens, progress.completion_tokens, resp.model)
        )
        self.services.memory.schedule(
            self.inp.request.scope,
            self.cid,
            self.inp.request.channel,
            is_group=self.inp.group,
        )

    async def _settle(self, status: MessageStatus) -> None:
        """After a cancel or failure: answer unanswered calls, keep the partial reply, marked."""
        progress, inp = self.progress, self.inp
        try:
            for call in list(progress.pending):
                done = progress.results.get(call.id)
                await self._persist_result(call, done or ToolResult(CANCELLED_RESULT, ok=False))
            text = "".join(progress.partial)
            if not text and status == MessageStatus.INTERRUPTED:
                await self._mark_unanswered()
            elif text or status == MessageStatus.ERROR:
                await self._append(
                    Message(
                        conversation_id=self.cid,
                        role="assistant",
                        content=self._clip(text),
                        channel=inp.request.channel,
                        status=status,
                        model=progress.model,
                        prompt_tokens=progress.prompt_tokens,
                        completion_tokens=progress.completion_tokens,
                        turn_id=inp.turn_id,
                    ),
                )
            progress.partial.clear()
        except StoreError as exc:
            # nothing more can be done now; the repair pass keeps the next request valid anyway
            log.warning("turn.cleanup_failed", error=str(exc))

    async def _mark_unanswered(self) -> None:
        """The interrupted marker a cut turn gets from the store, written now (same request key, so
        the store's own marking later finds it and adds nothing)."""
        await self._append(
            Message(
                conversation_id=self.cid,
                role="assistant",
                content=INTERRUPTED_TEXT,
                channel=self.inp.request.channel,
                status=MessageStatus.INTERRUPTED,
                message_type=INTERRUPTED_TYPE,
                turn_id=self.inp.turn_id,
            ),
            request_key=f"interrupted:{self.cid}:{self.user_sid}",
        )

    async def _append(self, message: Message, request_key: str | None = None) -> Message:
        """Store one of the turn's messages; the window cache gets it too (the next turn then reads
        only what came after it, and its early request is built on it)."""
        stored = await self.services.store.messages.append(
            self.inp.request.scope, message, request_key=request_key
        )
        self.services.window.appended(self.inp.request.scope, self.cid, stored)
        return stored

    def _clip(self, text: str) -> str:
        limit = self.services.store.max_message_chars
        if len(text) <= limit:
            return text
        note = "\n[truncated]"
        return text[: limit - len(note)] + note


def earlier_answer(window: list[Message], user_message: Message) -> Message | None:
    """The complete final answer already given to ``user_message`` (stored by an earlier delivery of
    the same request key), or None: a new message, or one whose earlier turn ended without an answer
    (that one is answered now)."""
    sid = user_message.sid
    # the user message is at the window's end unless an earlier delivery was answered: looked for
    # from there (a window of 200 messages was walked from its start on every turn)
    at = len(window) - 1
    while at >= 0 and window[at].sid != sid:
        at -= 1
    if at < 0:
        return None
    for msg in window[at + 1 :]:
        if msg.role == Role.USER:
            return None  # the conversation moved on without an answer to it
        if (
            msg.role == Role.ASSISTANT
            and msg.status == MessageStatus.COMPLETE
            and not msg.tool_calls
            and not msg.message_type
        ):
            return msg
    return None
