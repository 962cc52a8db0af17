"""Core mode of the ``osis`` engine: the whole engine seam on the five generated verbs of a hero_osis
built from ``agent_data.oschema`` (``get``/``set``/``delete``/``exist``/``list``; docs/osis.md, "Core
mode"). Used when ``rpc.discover`` does not list hero-agent's extensions.

What a generated server lacks is done here, in this process:

* **scope**: the server scopes nothing. Every record carries ``user_id`` and ``context``; every list
  filters on both; a ``get`` of another user's or context's record answers exactly like a missing sid
  (counted: ``scope_refusals``).
* **lists**: equality filters and at most 100 items in no particular order. A list first asks for
  everything matching its equality filters; fewer than 100 answers is the whole set. Otherwise it
  reads block by block (``block``: a message's ``(seq - 1) // 100``; any other record's place in its
  scope's current block, moved on when the block holds 100). Operators, order, cursors and limits run
  here, on the records read.
* **turn lock and seq**: leases are held in this process (only one daemon may write to such a store);
  a message's ``seq`` is the conversation's ``message_count`` + 1, assigned under one write lock of
  this process, and the conversation's count is bumped right after the message is stored. The first
  append to a conversation in a process checks that the next seq is free (repairs a crash between the
  two writes).
* **request keys**: a declared field; a create with a key first looks it up (one list call).
* **counts and text search**: on the client, over the records a list reads (see :data:`SEARCH_BOUND`).
* **never-expiring leases** (``claim_once`` marks) are ``AgentState`` records ``lease:<key>``, so a
  restart keeps them; expiring ones (turn locks) live in memory only.

Nothing here is atomic across calls; the write order is the Store's crash-safe one.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio

from store.engine import (
    ClaimStep,
    CountStep,
    CreateStep,
    DeleteStep,
    GetStep,
    ListQuery,
    ListStep,
    MarkCutStep,
    Page,
    ReleaseStep,
    Step,
    UpdateStep,
    settled,
)
from store.errors import InvalidInput, NotFound, StoreUnavailable
from store.leases import Claimed, Lease, LeaseOwner
from store.models import BASE_FIELDS, SID_RE, SYSTEM_CONTEXT, Kind, Record, Scope
from store.osis.core_query import (
    beyond,
    decode_cursor,
    encode_cursor,
    matches,
    pushed,
    seq_bounds,
    sort_key,
    words,
)
from store.osis.oschema import Field, fields_of, type_ok
from store.search import search_words

#: the server's largest list
LIST_MAX: Final = 100
#: records per listing block
BLOCK: Final = 100
#: fields core mode adds to every record (declared in agent_data.oschema), not shown to the Store
BOOKKEEPING: Final = ("request_key", "block")
#: declared ``str`` fields whose value is JSON (an object): sent as JSON text, read back decoded
JSON_TEXT_FIELDS: Final = frozenset({"legacy"})
#: the scope's block numbers per kind (an AgentState record of the scope; hidden from the Store)
BLOCKS_KEY: Final = "hero-agent:blocks"
#: the directory of a context's users (an AgentState record of this pseudo-user), for export
DIRECTORY_USER: Final = "hero-agent:directory"
LEASE_PREFIX: Final = "lease:"
#: a message search without a conversation reads this many of the newest conversations, and in each
#: the newest two blocks (at most 200 messages each)
SEARCH_BOUND: Final = 10
_TEXT_FIELDS: Final = {Kind.CONVERSATION: "title", Kind.MESSAGE: "content", Kind.MEMORY: "content"}

#: what core mode counts (``/metrics``: hero_store_core_fallbacks_total): messages numbered here, gets
#: and lists answered "missing" for another scope's record, lists read block by block, seqs repaired
#: after a crash, fields sent that the schema does not declare
EVENTS: Final = ("seq_assigned", "scope_refusals", "block_reads", "seq_repairs", "undeclared_fields_sent")

Call = Callable[..., Awaitable[Any]]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _HeldLease:
    holder: str
    owner: LeaseOwner | None
    #: monotonic ms, None never
    expires: float | None


class CoreMode:
    """The seam's steps on the five verbs. ``call(method, params, context, retries=None)`` is the
    engine's JSON-RPC call (retried on transport failures unless ``retries=0``)."""

    def __init__(self, call: Call, default_context: str, retries: int) -> None:
        self._call = call
        self._default_context = default_context
        self._retries = retries
        self._write = anyio.Lock()
        #: (context, user) -> kind -> [current block, records in it]
        self._blocks: dict[tuple[str, str], dict[str, builtins.list[int]]] = {}
        self._blocks_sid: dict[tuple[str, str], str | None] = {}
        #: conversations whose next seq this process has checked
        self._seq_checked: set[tuple[str, str]] = set()
        self._known_users: set[tuple[str, str]] = set()
        self._leases: dict[tuple[str, str, str], _HeldLease] = {}
        #: events for /metrics: client-side seq assignments, scope refusals, undeclared fields sent...
        self.events: dict[str, int] = defaultdict(int, dict.fromkeys(EVENTS, 0))

    # -- the steps -----------------------------------------------------------------------------

    async def run(self, scope: Scope, step: Step) -> object:
        if isinstance(step, GetStep):
            return await self.get(step.kind, scope, step.sid)
        if isinstance(step, ListStep):
            return await self.list(step.kind, scope, step.query)
        if isinstance(step, CountStep):
            return len(await self._matching(step.kind, scope, step.filters or {}))
        if isinstance(step, CreateStep):
            async with self._write:
                return await self.create(step.kind, scope, step.fields, step.request_key)
        if isinstance(step, UpdateStep):
            async with self._write:
                return await self.update(step.kind, scope, step.sid, step.fields)
        if isinstance(step, DeleteStep):
            async with self._write:
                return await self.delete(step.kind, scope, step.sid)
        if isinstance(step, ClaimStep):
            async with self._write:
                return settled(step, await self.claim(scope, step))
        if isinstance(step, ReleaseStep):
            async with self._write:
                await self.release(scope, step)
            return None
        if isinstance(step, MarkCutStep):
            raise TypeError("MarkCutStep runs as plain steps (Engine.mark_cut)")
        raise TypeError(f"not a batch step: {step!r}")

    # -- records -------------------------------------------------------------------------------

    def _shown(self, rec: Record) -> Record:
        """A server record as the Store sees it: bookkeeping fields gone, JSON text decoded."""
        out = {k: v for k, v in rec.items() if k not in BOOKKEEPING}
        for key in JSON_TEXT_FIELDS & out.keys():
            if isinstance(out[key], str):
                with contextlib.suppress(ValueError):
                    out[key] = json.loads(out[key])
        return out

    def _sent(self, kind: Kind, rec: Record) -> Record:
        """A record as the server takes it: every non-optional declared field present (its type's
        empty value when the Store did not set it), JSON objects as text. Undeclared fields go too
        (a generated server drops them; counted)."""
        declared = fields_of(kind)
        out: Record = {}
        for key, given in rec.items():
            if key == "sid":
                continue
            value = given
            if key in JSON_TEXT_FIELDS and not isinstance(value, str):
                value = json.dumps(value, ensure_ascii=False, sort_keys=True)
            field = declared.get(key)
            if field is None:
                self.events["undeclared_fields_sent"] += 1
            elif not type_ok(field.type, value):
                value = _coerced(field, value)
            out[key] = value
        for field in declared.values():
            if not field.optional and field.name not in out:
                out[field.name] = _empty(field)
        return out

    def _in_scope(self, rec: Record, scope: Scope) -> bool:
        if rec.get("user_id") == scope.user_id and rec.get("context") == scope.context:
            return True
        self.events["scope_refusals"] += 1
        return False

    async def _raw_get(self, kind: Kind, scope: Scope, sid: str) -> Record | None:
        if not isinstance(sid, str) or not SID_RE.match(sid):
            raise InvalidInput(f"invalid id {sid!r}")
        try:
            rec = await self._call(f"{kind.rpc_name}.get", {"sid": sid}, scope.context)
        except NotFound:
            return None
        if not isinstance(rec, dict) or not self._in_scope(rec, scope):
            return None
        return {**rec, "sid": sid}

    async def get(self, kind: Kind, scope: Scope, sid: str) -> Record | None:
        rec = await self._raw_get(kind, scope, sid)
        if rec is None or (kind is Kind.STATE and rec.get("key") == BLOCKS_KEY):
            return None
        return self._shown(rec)

    async def _list_call(self, kind: Kind, scope: Scope, eq: dict[str, Any]) -> builtins.list[Record]:
        flt = {"user_id": scope.user_id, "context": scope.context, **eq}
        answer = await self._call(f"{kind.rpc_name}.list", {"filter": flt, "limit": LIST_MAX}, scope.context)
        items = answer.get("items") if isinstance(answer, dict) else answer
        if not isinstance(items, builtins.list):
            raise InvalidInput(f"the OSIS store answered {kind.rpc_name}.list without a list")
        # the server's filter is trusted for nothing: scope is checked here again
        return [r for r in items if isinstance(r, dict) and self._in_scope(r, scope)]

    async def _all(self, kind: Kind, scope: Scope, eq: dict[str, Any]) -> builtins.list[Record]:
        """Every record of ``kind`` in ``scope`` with the equality filters ``eq``: one call when they
        are fewer than 100, else one call per block."""
        if kind is Kind.MESSAGE and isinstance(eq.get("conversation_id"), str):
            return await self._message_blocks(scope, eq, None, None)
        first = await self._list_call(kind, scope, eq)
        if len(first) < LIST_MAX:
            return first
        self.events["block_reads"] += 1
        if kind is Kind.MESSAGE:  # every message of the user: conversation by conversation
            out: builtins.list[Record] = []
            for conv in await self._all(Kind.CONVERSATION, scope, {}):
                out += await self._message_blocks(scope, {**eq, "conversation_id": conv["sid"]}, None, None)
            return out
        top = (await self._block_state(scope)).get(kind.value, [0, 0])[0]
        seen: dict[str, Record] = {}
        for block in range(top + 1):
            for rec in await self._list_call(kind, scope, {**eq, "block": block}):
                seen[str(rec["sid"])] = rec
        return list(seen.values())

    async def _message_blocks(
        self, scope: Scope, eq: dict[str, Any], low: int | None, high: int | None
    ) -> builtins.list[Record]:
        """The messages of one conversation in blocks ``low..high`` (seq bounds), one call each."""
        conv = await self._raw_get(Kind.CONVERSATION, scope, str(eq["conversation_id"]))
        if conv is None:
            return []
        count = int(conv.get("message_count") or 0)
        if count == 0:
            return []
        top = (count - 1) // BLOCK
        first = 0 if low is None else max(0, (low - 1) // BLOCK)
        last = top if high is None else min(top, (high - 1) // BLOCK)
        out: builtins.list[Record] = []
        for block in range(first, last + 1):
            out += await self._list_call(Kind.MESSAGE, scope, {**eq, "block": block})
        return out

    async def _candidates(self, kind: Kind, scope: Scope, filters: dict[str, Any]) -> builtins.list[Record]:
        eq = pushed(kind, filters)
        if kind is Kind.MESSAGE and isinstance(eq.get("conversation_id"), str):
            low, high = seq_bounds(filters)
            return await self._message_blocks(scope, eq, low, high)
        return await self._all(kind, scope, eq)

    async def _matching(self, kind: Kind, scope: Scope, filters: dict[str, Any]) -> builtins.list[Record]:
        out = []
        for rec in await self._candidates(kind, scope, filters):
            shown = self._shown(rec)
            if kind is Kind.STATE and shown.get("key") == BLOCKS_KEY:
                continue
            if all(matches(shown, key, want) for key, want in filters.items()):
                out.append(shown)
        return out

    async def list(self, kind: Kind, scope: Scope, query: ListQuery) -> Page[Record]:
        if query.text is not None:
            return await self._search(kind, scope, query)
        if kind is Kind.MESSAGE and query.order_by == "seq" and query.cursor is None:
            rows = await self._newest_or_oldest(scope, query)
        else:
            rows = await self._matching(kind, scope, query.filters)
        rows.sort(
            key=lambda r: (sort_key(r.get(query.order_by)), str(r.get("sid"))), reverse=query.descending
        )
        if query.cursor is not None:
            after = decode_cursor(query.cursor)
            rows = [r for r in rows if beyond((sort_key(r.get(query.order_by)), str(r["sid"])), after, query)]
        page = rows[: query.limit]
        more = len(rows) > query.limit
        cursor = encode_cursor(page[-1], query.order_by) if more and page else None
        return Page(page, cursor)

    async def _newest_or_oldest(self, scope: Scope, query: ListQuery) -> builtins.list[Record]:
        """A conversation's messages in seq order: blocks from the wanted end until ``limit`` match
        (the history window: one call, two when it straddles a block)."""
        eq = pushed(Kind.MESSAGE, query.filters)
        if not isinstance(eq.get("conversation_id"), str):
            return await self._matching(Kind.MESSAGE, scope, query.filters)
        conv = await self._raw_get(Kind.CONVERSATION, scope, str(eq["conversation_id"]))
        count = int(conv.get("message_count") or 0) if conv is not None else 0
        low, high = seq_bounds(query.filters)
        first = max(0, ((low or 1) - 1) // BLOCK)
        last = (min(count, high) if high is not None else count) - 1
        if count == 0 or last < 0:
            return []
        blocks = range(first, last // BLOCK + 1)
        out: builtins.list[Record] = []
        for block in reversed(blocks) if query.descending else blocks:
            for rec in await self._list_call(Kind.MESSAGE, scope, {**eq, "block": block}):
                shown = self._shown(rec)
                if all(matches(shown, key, want) for key, want in query.filters.items()):
                    out.append(shown)
            if len(out) > query.limit:
                break
        return out

    async def _search(self, kind: Kind, scope: Scope, query: ListQuery) -> Page[Record]:
        field = _TEXT_FIELDS.get(kind)
        if field is None:
            raise InvalidInput(f"text search is not available for {kind.value}")
        if query.cursor is not None:
            raise InvalidInput("text search does not page with a cursor")
        wanted = search_words(query.text or "")
        if not wanted:
            return Page([])
        if kind is Kind.MESSAGE and "conversation_id" not in query.filters:
            rows = await self._recent_messages(scope, query.filters)
        else:
            rows = await self._matching(kind, scope, query.filters)
        scored = []
        for rec in rows:
            found = [w.lower() for w in words(str(rec.get(field) or ""))]
            shared = sum(1 for w in found if any(w.startswith(x) for x in wanted))
            if shared:
                scored.append((shared, int(rec.get("created_at") or 0), rec))
        scored.sort(key=lambda item: (item[0], item[1]), reverse=True)
        return Page([rec for _, _, rec in scored[: query.limit]])

    async def _recent_messages(self, scope: Scope, filters: dict[str, Any]) -> builtins.list[Record]:
        """The bounded set a message search reads: the newest two blocks of the :data:`SEARCH_BOUND`
        most recently updated conversations."""
        convs = await self._matching(Kind.CONVERSATION, scope, {})
        convs.sort(key=lambda c: int(c.get("updated_at") or 0), reverse=True)
        out: builtins.list[Record] = []
        for conv in convs[:SEARCH_BOUND]:
            count = int(conv.get("message_count") or 0)
            eq = {"conversation_id": conv["sid"]}
            for rec in await self._message_blocks(scope, eq, max(1, count - BLOCK), None):
                shown = self._shown(rec)
                if all(matches(shown, key, want) for key, want in filters.items()):
                    out.append(shown)
        return out

    async def answered_here(self, scope: Scope, conversation_id: str, request_key: str | None) -> bool:
        """The conversation's newest message is the user message stored under ``request_key``: a
        repeated opening, which the turn now opening answers (no cut-turn marker for it)."""
        if request_key is None:
            return False
        found = await self._find_key(Kind.MESSAGE, scope, request_key)
        if found is None or found.get("conversation_id") != conversation_id:
            return False
        conv = await self._raw_get(Kind.CONVERSATION, scope, conversation_id)
        return conv is not None and found.get("seq") == conv.get("message_count")

    # -- writes --------------------------------------------------------------------------------

    async def _find_key(self, kind: Kind, scope: Scope, key: str) -> Record | None:
        found = await self._list_call(kind, scope, {"request_key": key})
        return found[0] if found else None

    async def _set(self, kind: Kind, scope: Scope, rec: Record, sid: str | None = None) -> str:
        """One ``set``: a create (``sid`` None) is retried after a lost answer only when its request
        key is not found stored (so never doubled); a replace is simply repeated."""
        params: dict[str, Any] = {"object": self._sent(kind, rec)}
        method = f"{kind.rpc_name}.set"
        if sid is not None:
            params["sid"] = sid
            return _sid_of(await self._call(method, params, scope.context))
        for attempt in range(1 + self._retries):
            if attempt:
                found = await self._find_key(kind, scope, str(rec["request_key"]))
                if found is not None:
                    return str(found["sid"])
            try:
                return _sid_of(await self._call(method, params, scope.context, retries=0))
            except StoreUnavailable:
                if attempt == self._retries:
                    raise
                await anyio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    async def create(self, kind: Kind, scope: Scope, fields: Record, request_key: str | None) -> Record:
        if request_key is not None:
            found = await self._find_key(kind, scope, request_key)
            if found is not None:
                return self._shown(found)
        await self._note_user(scope)
        now = now_ms()
        rec: Record = {k: v for k, v in fields.items() if k not in BASE_FIELDS and k not in BOOKKEEPING}
        rec.update(context=scope.context, user_id=scope.user_id, created_at=now, updated_at=now)
        rec["request_key"] = request_key or f"osis-core:{now}:{id(rec):x}:{time.monotonic_ns():x}"
        if kind is Kind.MESSAGE:
            return await self._append(scope, rec)
        rec["block"] = await self._next_block(scope, kind)
        sid = await self._set(kind, scope, rec)
        return self._shown(self._kept(kind, {**rec, "sid": sid}))

    def _kept(self, kind: Kind, rec: Record) -> Record:
        """What the server keeps of ``rec``: the declared fields (and the sid)."""
        declared = fields_of(kind)
        return {k: v for k, v in rec.items() if k in declared or k == "sid"}

    async def _append(self, scope: Scope, rec: Record) -> Record:
        """A message: seq = the conversation's count + 1 (under the write lock), then the count."""
        conv_id = rec.get("conversation_id")
        conv = (
            await self._raw_get(Kind.CONVERSATION, scope, str(conv_id)) if isinstance(conv_id, str) else None
        )
        if conv is None:
            raise NotFound(Kind.CONVERSATION.value, str(conv_id))
        count = int(conv.get("message_count") or 0)
        if (scope.context, str(conv_id)) not in self._seq_checked:
            count = await self._repaired_count(scope, str(conv_id), count)
            self._seq_checked.add((scope.context, str(conv_id)))
        rec["seq"] = count + 1
        rec["block"] = count // BLOCK
        self.events["seq_assigned"] += 1
        sid = await self._set(Kind.MESSAGE, scope, rec)
        conv.update(
            message_count=count + 1, updated_at=rec["updated_at"], last_channel=rec.get("channel", "")
        )
        await self._set(Kind.CONVERSATION, scope, {k: v for k, v in conv.items() if k != "sid"}, str(conv_id))
        return self._shown(self._kept(Kind.MESSAGE, {**rec, "sid": sid}))

    async def _repaired_count(self, scope: Scope, conv_id: str, count: int) -> int:
        """The conversation's true count: a crash between a message and its count leaves seq
        count + 1 taken (one call per conversation and process)."""
        while True:
            taken = await self._list_call(Kind.MESSAGE, scope, {"conversation_id": conv_id, "seq": count + 1})
            if not taken:
                return count
            self.events["seq_repairs"] += 1
            count += 1

    async def update(self, kind: Kind, scope: Scope, sid: str, fields: Record) -> Record | None:
        rec = await self._raw_get(kind, scope, sid)
        if rec is None:
            return None
        owned = (*BASE_FIELDS, *BOOKKEEPING, *(("seq",) if kind is Kind.MESSAGE else ()))
        shown = self._shown(rec)
        shown.update({k: v for k, v in fields.items() if k not in owned})
        shown["updated_at"] = now_ms()
        body = {**shown, "request_key": rec.get("request_key", ""), "block": rec.get("block", 0)}
        body.pop("sid", None)
        await self._set(kind, scope, body, sid)
        return self._shown(self._kept(kind, {**body, "sid": sid}))

    async def delete(self, kind: Kind, scope: Scope, sid: str) -> bool:
        rec = await self._raw_get(kind, scope, sid)
        if rec is None:
            return False
        if kind is Kind.CONVERSATION:
            for child in (Kind.MESSAGE, Kind.ATTACHMENT):
                for item in await self._all(child, scope, {"conversation_id": sid}):
                    await self._call(f"{child.rpc_name}.delete", {"sid": item["sid"]}, scope.context)
        return bool(await self._call(f"{kind.rpc_name}.delete", {"sid": sid}, scope.context))

    # -- blocks and the user directory --------------------------------------------------------

    async def _block_state(self, scope: Scope) -> dict[str, builtins.list[int]]:
        key = (scope.context, scope.user_id)
        if key not in self._blocks:
            found = await self._list_call(Kind.STATE, scope, {"key": BLOCKS_KEY})
            value = json.loads(found[0]["value"]) if found else {}
            self._blocks_sid[key] = str(found[0]["sid"]) if found else None
            # the current block's fill is learnt on the first create of each kind
            self._blocks[key] = {k: [int(v), -1] for k, v in value.items()}
        return self._blocks[key]

    async def _next_block(self, scope: Scope, kind: Kind) -> int:
        """The block a new record of ``kind`` goes in: the current one until it holds 100."""
        state = await self._block_state(scope)
        entry = state.setdefault(kind.value, [0, -1])
        if entry[1] < 0:
            entry[1] = len(await self._list_call(kind, scope, {"block": entry[0]}))
        if entry[1] >= BLOCK:
            entry[0], entry[1] = entry[0] + 1, 0
            await self._save_blocks(scope, state)
        entry[1] += 1
        return entry[0]

    async def _save_blocks(self, scope: Scope, state: dict[str, builtins.list[int]]) -> None:
        key = (scope.context, scope.user_id)
        now = now_ms()
        rec: Record = {
            "context": scope.context,
            "user_id": scope.user_id,
            "created_at": now,
            "updated_at": now,
            "request_key": BLOCKS_KEY,
            "block": -1,
            "key": BLOCKS_KEY,
            "value": json.dumps({k: v[0] for k, v in state.items()}, sort_keys=True),
        }
        sid = self._blocks_sid.get(key)
        self._blocks_sid[key] = await self._set(Kind.STATE, scope, rec, sid)

    async def _note_user(self, scope: Scope) -> None:
        """Name the user in the context's directory (what an export walks), once per process."""
        key = (scope.context, scope.user_id)
        if key in self._known_users or scope.user_id == DIRECTORY_USER:
            return
        users, sid = await self._directory(scope.context)
        if scope.user_id not in users:
            users.append(scope.user_id)
            now = now_ms()
            rec: Record = {
                "context": scope.context,
                "user_id": DIRECTORY_USER,
                "created_at": now,
                "updated_at": now,
                "request_key": "hero-agent:users",
                "block": -1,
                "key": "users",
                "value": json.dumps(sorted(users)),
            }
            await self._set(Kind.STATE, Scope(scope.context, DIRECTORY_USER), rec, sid)
        self._known_users.add(key)

    async def contexts(self) -> builtins.list[str]:
        """The contexts known here (the configured one, ``_system``, those written to) that hold records."""
        known = {self._default_context, SYSTEM_CONTEXT} | {ctx for ctx, _ in self._known_users}
        return [ctx for ctx in sorted(known) if (await self._directory(ctx))[0]]

    async def _directory(self, context: str) -> tuple[builtins.list[str], str | None]:
        found = await self._list_call(Kind.STATE, Scope(context, DIRECTORY_USER), {"key": "users"})
        if not found:
            return [], None
        return [str(u) for u in json.loads(found[0]["value"])], str(found[0]["sid"])

    # -- leases -------------------------------------------------------------------------------

    async def claim(self, scope: Scope, step: ClaimStep) -> Claimed:
        if step.ttl_ms is None:
            return await self._claim_mark(scope, step)
        key = (scope.context, scope.user_id, step.key)
        now = time.monotonic() * 1000
        held = self._leases.get(key)
        expires = now + step.ttl_ms
        if held is None:
            outcome = Claimed.TAKEN
        elif held.holder == step.holder:
            outcome = Claimed.RENEWED
        elif held.expires is not None and held.expires <= now:
            outcome = Claimed.LAPSED
        elif step.replace is not None and held.holder == step.replace:
            outcome = Claimed.REPLACED
        else:
            return Claimed.REFUSED
        self._leases[key] = _HeldLease(step.holder, step.owner, expires)
        return outcome

    async def _claim_mark(self, scope: Scope, step: ClaimStep) -> Claimed:
        """A never-expiring lease (a de-duplication mark) is an AgentState record: kept across restarts."""
        found = await self._list_call(Kind.STATE, scope, {"key": LEASE_PREFIX + step.key})
        if found:
            holder = json.loads(found[0]["value"]).get("holder")
            return Claimed.RENEWED if holder == step.holder else Claimed.REFUSED
        value = json.dumps({"holder": step.holder, "expires_at": None})
        fields: Record = {"key": LEASE_PREFIX + step.key, "value": value}
        await self.create(Kind.STATE, scope, fields, LEASE_PREFIX + step.key)
        return Claimed.TAKEN

    async def release(self, scope: Scope, step: ReleaseStep) -> None:
        key = (scope.context, scope.user_id, step.key)
        held = self._leases.get(key)
        if held is not None and held.holder == step.holder:
            del self._leases[key]
            return
        if held is None:
            for rec in await self._list_call(Kind.STATE, scope, {"key": LEASE_PREFIX + step.key}):
                if json.loads(rec["value"]).get("holder") == step.holder:
                    await self._call(f"{Kind.STATE.rpc_name}.delete", {"sid": rec["sid"]}, scope.context)

    def get_lease(self, scope: Scope, key: str) -> Lease | None:
        held = self._leases.get((scope.context, scope.user_id, key))
        return None if held is None else self._lease(scope.user_id, key, held)

    def list_leases(self, context: str, prefix: str) -> builtins.list[Lease]:
        return [
            self._lease(user, key, held)
            for (ctx, user, key), held in sorted(self._leases.items(), key=lambda kv: kv[0])
            if ctx == context and key.startswith(prefix)
        ]

    @staticmethod
    def _lease(user: str, key: str, held: _HeldLease) -> Lease:
        left = None if held.expires is None else int(held.expires - time.monotonic() * 1000)
        return Lease(user, key, held.holder, held.owner, left)

    # -- export / import ------------------------------------------------------------------------

    async def dump(self, context: str) -> AsyncIterator[tuple[Kind, Record]]:
        """Every record of the context, user by user (the directory), kinds in ``Kind`` order, by sid."""
        users, _ = await self._directory(context)
        for kind in Kind:
            for user in sorted(users):
                scope = Scope(context, user)
                rows = await self._matching(kind, scope, {})
                for rec in sorted(rows, key=lambda r: (int(r.get("seq") or 0), str(r["sid"]))):
                    if not (kind is Kind.STATE and str(rec.get("key", "")).startswith("hero-agent:")):
                        yield kind, rec

    async def restore_batch(self, items: Sequence[tuple[Kind, Record]]) -> int:
        """Dumped records, created anew (the server allocates sids): each one's old sid is its request
        key (``restore:<sid>``), so a repeat finds it instead of doubling it, and references to it
        (``conversation_id``, ``source_conversation_id``) are rewritten to the new sid."""
        written = 0
        async with self._write:
            for kind, record in items:
                written += await self._restore_one(kind, record)
        return written

    async def _new_sid(self, kind: Kind, scope: Scope, old: str) -> str | None:
        found = await self._find_key(kind, scope, f"restore:{old}")
        return None if found is None else str(found["sid"])

    async def _restore_one(self, kind: Kind, record: Record) -> int:
        context, user = record.get("context"), record.get("user_id")
        if not isinstance(context, str) or not isinstance(user, str):
            raise InvalidInput("a restored record needs its context and user")
        scope = Scope(context, user)
        key = f"restore:{record.get('sid')}"
        if await self._find_key(kind, scope, key) is not None:
            return 0
        rec = {k: v for k, v in record.items() if k not in ("sid", *BOOKKEEPING)}
        for ref in ("conversation_id", "source_conversation_id"):
            old = rec.get(ref)
            if isinstance(old, str) and old:
                new = await self._new_sid(Kind.CONVERSATION, scope, old)
                if new is None and kind in (Kind.MESSAGE, Kind.ATTACHMENT):
                    raise InvalidInput(f"{kind.value} {record.get('sid')}: its conversation is missing")
                rec[ref] = new or old
        await self._note_user(scope)
        rec["request_key"] = key
        seq = int(rec.get("seq") or 0)
        rec["block"] = (seq - 1) // BLOCK if kind is Kind.MESSAGE else await self._next_block(scope, kind)
        await self._set(kind, scope, rec)
        return 1


def _sid_of(answer: Any) -> str:
    sid = answer.get("sid") if isinstance(answer, dict) else answer
    if not isinstance(sid, str):
        raise InvalidInput("the OSIS store answered set without a sid")
    return sid


def _empty(field: Field) -> Any:
    if field.type.startswith("["):
        return []
    return {"str": "", "sid": "", "bool": False, "f64": 0.0}.get(field.type, 0)


def _coerced(field: Field, value: Any) -> Any:
    """A value the Store gives loosely typed (None, an int where f64 is declared) as the schema's type;
    a value that cannot be is sent as it is (the server refuses it: one clear error)."""
    if value is None:
        return _empty(field)
    if field.type == "f64" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
