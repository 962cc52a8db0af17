"""Auto-memory: durable facts about the user, extracted after turns and recalled into later ones.

Extraction runs off the reply path: a completed turn *schedules* it, debounced per conversation
(``memory.debounce_s``), in a task group the :class:`~agent.core.Agent` owns. The model (the
extraction model, or the main one) sees the new messages and the memories already kept and answers
``{"memories": [...]}``; memories are only ever added (exact duplicates are dropped by the store's
hash). ``flush`` runs a pending extraction at once: before ``/clear``, before compaction, at shutdown.

Recall: each turn, the scope's memories that share words with the user's text plus the newest few,
ranked by keyword relevance and recency, go into the system prompt.

Groups: a group scope belongs to the group, so the personal memories of its members (stored in their
own (context, user) scopes) can never be recalled there. Auto-extraction is off in groups (there is no
single "user" to learn about); memories saved explicitly in a group stay the group's own.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass

import anyio
import structlog
from anyio.abc import TaskGroup

from agent.errors import ProviderError
from agent.llm import LLM, CallSite
from agent.providers.base import ChatMessage, ChatRequest
from config.settings import MemorySettings
from store import KeyedLocks, Memory, Message, Role, Scope, Store, StoreError

log = structlog.get_logger()

EXTRACTION_MARKER = "[hero-agent:memory-extraction]"
EXTRACTION_PROMPT = f"""{EXTRACTION_MARKER}
You maintain long-term memory about the user of an assistant. Read the new part of a conversation and
list durable facts worth remembering in future conversations: who the user is, their preferences, plans,
projects, people and things they care about. Skip small talk, one-off requests and anything already
known. Write each fact as one short, self-contained sentence about the user.
Answer with JSON only: {{"memories": ["...", "..."]}} (an empty list when there is nothing new)."""

#: how many recent messages one extraction looks at, and how much of each
EXTRACTION_WINDOW = 40
MAX_MESSAGE_CHARS = 2_000
MAX_MEMORY_CHARS = 500
MAX_NEW_MEMORIES = 20
RECENT_FOR_RECALL = 5
#: users whose every memory the manager keeps for early requests (each at most RECENT_FOR_RECALL - 1)
KNOWN_USERS = 4096
_WORD_RE = re.compile(r"\w{3,}")
_FENCE_RE = re.compile(r"^```[\w-]*\s*|\s*```$")


def _state_key(conversation_id: str) -> str:
    return f"memory_seq:{conversation_id}"


def parse_memories(text: str) -> list[str]:
    """The facts in a model's answer; tolerant of code fences, prose around the JSON, a bare list."""
    body = _FENCE_RE.sub("", text.strip()).strip()
    parsed: object = None
    for candidate in (body, _between(body, "{", "}"), _between(body, "[", "]")):
        if not candidate:
            continue
        try:
            parsed = json.loads(candidate)
            break
        except ValueError:
            continue
    items = parsed.get("memories") if isinstance(parsed, dict) else parsed
    out: list[str] = []
    for item in items if isinstance(items, list) else ():
        fact = (item.get("content") or item.get("fact") or "") if isinstance(item, dict) else item
        if isinstance(fact, str) and fact.strip():
            out.append(fact.strip()[:MAX_MEMORY_CHARS])
    return out[:MAX_NEW_MEMORIES]


def _between(text: str, left: str, right: str) -> str:
    start, end = text.find(left), text.rfind(right)
    return text[start : end + 1] if 0 <= start < end else ""


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD_RE.findall(text)}


def rank_memories(candidates: list[Memory], text: str, limit: int) -> list[Memory]:
    """Keyword overlap with ``text`` first, recency as the tie-breaker and for the unrelated newest."""
    unique = list({m.sid: m for m in candidates}.values())
    unique.sort(key=lambda m: m.created_at, reverse=True)
    query = _words(text)
    n = len(unique)
    scored = []
    for i, mem in enumerate(unique):
        overlap = len(query & _words(mem.content))
        recency = 1.0 - i / n
        scored.append((overlap + 0.5 * recency, mem))
    scored.sort(key=lambda pair: pair[0], reverse=True)
    return [m for _, m in scored[:limit]]


@dataclass(slots=True)
class _Pending:
    scope: Scope
    conversation_id: str
    channel: str
    due: float


class MemoryManager:
    """Recall for every turn and debounced background extraction after it."""

    def __init__(self, store: Store, llm: LLM, settings: MemorySettings, model: str) -> None:
        self.store = store
        self.llm = llm
        self.settings = settings
        self.model = settings.extraction_model or model
        self._tg: TaskGroup | None = None
        self._pending: dict[tuple[str, str, str], _Pending] = {}
        #: one per conversation being extracted now (dropped when free: a daemon serves many)
        self._locks = KeyedLocks()
        #: every memory of a user, as their turns' openings last read them, for users with fewer
        #: than ``RECENT_FOR_RECALL`` (the opening's newest then are all of them): a turn's early
        #: request recalls from these without a read (:meth:`known`); least recently used dropped
        self._all: OrderedDict[tuple[str, str], list[Memory]] = OrderedDict()

    def bind(self, tg: TaskGroup | None) -> None:
        """Background extraction runs in ``tg`` (the Agent's); without one, ``schedule`` does nothing."""
        self._tg = tg

    # -- recall ------------------------------------------------------------------------------------

    def recall_plan(self, text: str) -> tuple[str, int, int]:
        """What a turn reads to recall (in the store call that opens it): ``(words, how many
        matching memories, how many of the newest)``."""
        limit = self.settings.recall_limit
        if limit <= 0:
            return "", 0, 0
        return text, min(limit * 2, 100), RECENT_FOR_RECALL

    def ranked(self, matching: list[Memory], recent: list[Memory], text: str) -> list[Memory]:
        """The memories recalled into the system prompt, most relevant first."""
        limit = self.settings.recall_limit
        return rank_memories(matching + recent, text, limit) if limit > 0 else []

    def read(self, scope: Scope, recent: list[Memory], asked: int) -> None:
        """A turn's recall read the user's newest ``asked`` memories: ``recent``. Fewer came back:
        they are all the user has, kept for :meth:`known` (more: forgotten)."""
        key = (scope.context, scope.user_id)
        if len(recent) >= asked:
            self._all.pop(key, None)
            return
        self._all[key] = list(recent)
        self._all.move_to_end(key)
        while len(self._all) > KNOWN_USERS:
            self._all.popitem(last=False)

    def known(self, scope: Scope, text: str) -> list[Memory] | None:
        """What a turn would recall for ``text``, from every memory of the user as last read
        (:meth:`read`), without a read; None when not known. A guess for a turn's early request,
        which its opening's own recall confirms (``agent/turn/early.py``)."""
        mems = self._all.get((scope.context, scope.user_id))
        return self.ranked([], mems, text) if mems is not None else None

    def forget(self, scope: Scope) -> None:
        """This process changed the user's memories: what :meth:`known` kept of them is stale."""
        self._all.pop((scope.context, scope.user_id), None)

    # -- extraction --------------------------------------------------------------------------------

    def schedule(self, scope: Scope, conversation_id: str, channel: str, *, is_group: bool) -> None:
        """Extract from this conversation once it has been quiet for ``debounce_s``."""
        if not self.settings.enabled or is_group or self._tg is None:
            return
        key = (scope.context, scope.user_id, conversation_id)
        due = anyio.current_time() + self.settings.debounce_s
        pending = self._pending.get(key)
        if pending is not None:
            pending.due = due
            return
        pending = _Pending(scope, conversation_id, channel, due)
        self._pending[key] = pending
        self._tg.start_soon(self._extract_when_due, key, pending)

    async def _extract_when_due(self, key: tuple[str, str, str], pending: _Pending) -> None:
        # debounce: each new turn pushes ``due`` further; wake up until the conversation is quiet
        while (delay := pending.due - anyio.current_time()) > 0:  # noqa: ASYNC110 (a re-armed timer, not a poll)
            await anyio.sleep(delay)
        if self._pending.get(key) is not pending:
            return  # flushed meanwhile
        del self._pending[key]
        await self._extract_safely(pending.scope, pending.conversation_id, pending.channel)

    async def flush(self, scope: Scope, conversation_id: str, channel: str = "") -> int:
        """Run the extraction for this conversation now (pending or not); the count of new memories."""
        if not self.settings.enabled:
            return 0
        pending = self._pending.pop((scope.context, scope.user_id, conversation_id), None)
        return await self._extract_safely(scope, conversation_id, pending.channel if pending else channel)

    async def flush_all(self, deadline_s: float) -> None:
        """Shutdown: run every pending extraction, giving up after ``deadline_s``."""
        pending = list(self._pending.values())
        self._pending.clear()
        with anyio.move_on_after(deadline_s) as scope:
            for p in pending:
                await self._extract_safely(p.scope, p.conversation_id, p.channel)
        if scope.cancelled_caught:
            log.warning("memory.flush_timeout", pending=len(pending))

    async def _extract_safely(self, scope: Scope, conversation_id: str, channel: str) -> int:
        try:
            return await self.extract(scope, conversation_id, channel)
        except (ProviderError, StoreError) as exc:
            # memory is best effort: a failed extraction is retried with the next turn's messages
            log.warning("memory.extraction_failed", conversation=conversation_id, error=str(exc))
            return 0
        except Exception:
            # a bug here must not reach the Agent's task group (it would cancel every running turn)
            log.exception("memory.extraction_crashed", conversation=conversation_id)
            return 0

    async def extract(self, scope: Scope, conversation_id: str, channel: str) -> int:
        """Extract memories from the messages not yet looked at; returns how many were new."""
        key = (scope.context, scope.user_id, conversation_id)
        async with self._locks.hold(key):
            if (await self.store.conversations.get(scope, conversation_id)).is_group:
                return 0  # groups: no single user to learn about (see the module docstring)
            seen = int(await self.store.state.get(scope, _state_key(conversation_id)) or 0)
            page = await self.store.messages.list(
                scope, conversation_id, limit=EXTRACTION_WINDOW, descending=True
            )
            fresh = [m for m in reversed(page.items) if m.seq > seen]
            if not fresh:
                return 0
            transcript = _transcript(fresh)
            if not transcript:
                await self.store.state.set(scope, _state_key(conversation_id), str(fresh[-1].seq))
                return 0
            known = await self.store.memories.list(
                scope, limit=max(1, min(self.settings.max_memories_shown, 1000))
            )
            answer = await self.llm.call(
                _extraction_request(self.model, transcript, [m.content for m in known.items]),
                CallSite(scope, conversation_id, channel),
            )
            added = 0
            for fact in parse_memories(answer.text):
                _, created = await self.store.memories.add(
                    scope, fact, source_conversation_id=conversation_id, source_channel=channel
                )
                added += created
            if added:
                self.forget(scope)
            await self.store.state.set(scope, _state_key(conversation_id), str(fresh[-1].seq))
            log.info("memory.extracted", conversation=conversation_id, new=added, messages=len(fresh))
            return added


def _transcript(messages: list[Message]) -> str:
    lines = []
    for m in messages:
        if m.role not in (Role.USER, Role.ASSISTANT) or not m.content.strip() or m.message_type:
            continue
        who = "User" if m.role == Role.USER else "Assistant"
        lines.append(f"{who}: {m.content[:MAX_MESSAGE_CHARS]}")
    return "\n".join(lines)


def _extraction_request(model: str, transcript: str, known: list[str]) -> ChatRequest:
    known_text = "\n".join(f"- {k}" for k in known) or "(none)"
    system = f"{EXTRACTION_PROMPT}\n\nAlready remembered (do not repeat):\n{known_text}"
    return ChatRequest(
        model=model,
        system=system,
        messages=(ChatMessage(role="user", content=f"New conversation messages:\n{transcript}"),),
        max_tokens=1024,
        temperature=0.0,
    )
