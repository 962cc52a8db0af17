"""The ``osis`` engine: the engine seam over OSIS JSON-RPC 2.0 on HTTP (SPEC 7.2, 7.3).

One pooled :class:`httpx.AsyncClient` per engine; every call carries ``X-Hero-Context`` (the scope's
context) and the user as the ``user_id`` param. ``open()`` checks ``rpc.discover`` and names any method
the service lacks. Every call this engine makes is safe to repeat, so each is retried (``store.retries``
times, on connection errors, timeouts and 502/503/504, never after an answer): reads, updates, deletes,
lease claims by the same holder and restores are idempotent, and every create carries a ``request_key``
(the caller's, or one generated per call) so a create whose answer was lost is repeated without
doubling. Nothing is
sticky: after an outage the next call simply reconnects. The secret never appears in errors or logs.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
import httpx
import structlog

from config import StoreSettings
from store.engine import (
    Capabilities,
    ClaimStep,
    CreateStep,
    Engine,
    GetStep,
    MarkCutStep,
    Results,
    Step,
    UpdateStep,
    settled,
)
from store.errors import InvalidInput, NotFound, StoreError, StoreUnavailable, UnsupportedOperation
from store.leases import Lease
from store.models import Kind, Record, Scope
from store.osis.core import CoreMode
from store.osis.protocol import (
    CONTEXT_HEADER,
    DOMAIN,
    DUMP_PAGE,
    MAX_BATCH,
    OPTIONAL_METHODS,
    REQUIRED_METHODS,
    RESTORE_BATCH,
    OsisAuthError,
    OsisProtocolError,
    endpoint_for,
    methods_in,
    store_error_for,
)
from store.osis.wire import ANSWERS, RemoteError, Retryable, answer_of, encode, plan, record_of

log = structlog.get_logger()
#: the endpoint's path over a unix socket unless ``store.rpc_path`` says otherwise
SOCKET_RPC_PATH = f"/hero_osis_{DOMAIN}/rpc"
_RETRY_STATUS = frozenset({502, 503, 504})
_BACKOFF_S = (0.05, 0.2, 0.5, 1.0)
#: what ``counters()`` counts: a failed attempt by reason, and a call that stayed unreachable
_EVENTS = ("deadline", "timeout", "connection", "gateway", "unreachable")
#: restore_batch chunks stay well under the server's request size limit
#: restore requests stay small (a record larger than this goes alone, up to MAX_BODY_BYTES)
_CHUNK_BYTES = 512 * 1024


def redacted(url: str) -> str:
    """``url`` without user info or query (where credentials could hide)."""
    try:
        u = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid url>"
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.host}{port}{u.path}"


class OsisEngine(Engine):
    """A remote OSIS service as a store engine. Selected by ``store.engine = "osis"``."""

    name = "osis"
    #: the server runs a batch's calls one by one (each its own transaction)
    capabilities = Capabilities(atomic_batch=False)

    def __init__(self, settings: StoreSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not settings.url:
            raise StoreError("store.url must name the OSIS service when store.engine is 'osis'")
        self.socket_path = unix_socket_path(settings.url)
        if self.socket_path is not None:
            # HTTP over the socket; the host is a placeholder, the path the usual endpoint
            self.endpoint = "http://localhost" + (settings.rpc_path or SOCKET_RPC_PATH)
            self.where = f"unix://{self.socket_path}{settings.rpc_path or SOCKET_RPC_PATH}"
            transport = transport or httpx.AsyncHTTPTransport(uds=self.socket_path)
        else:
            self.endpoint = endpoint_for(settings.url)
            self.where = redacted(self.endpoint)
        self._secret = settings.secret
        self._timeout = httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 5.0))
        self._attempt_s = settings.timeout_s
        self._retries = max(0, settings.retries)
        self._default_context = settings.context or "default"
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._checked = False
        #: the methods the server's rpc.discover listed (optional extensions are used only if there)
        self._methods: set[str] = set()
        #: the optional methods (OPTIONAL_METHODS) the service lists
        self._optional: frozenset[str] = frozenset()
        self._next_id = 0
        #: failed attempts by reason, and calls that failed after every attempt (for /metrics)
        self._events = dict.fromkeys(_EVENTS, 0)
        #: core mode (a generated server without hero-agent's extensions): the seam on the five verbs
        self._core: CoreMode | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self._secret}"} if self._secret else {}
            self._client = httpx.AsyncClient(
                transport=self._transport,
                headers=headers,
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            )
        try:
            await self._check_methods()
        except BaseException:
            # a failed open leaves nothing behind: the caller's __aexit__ will not run
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise

    async def aclose(self) -> None:
        client, self._client = self._client, None
        self._checked = False
        if client is not None:
            await client.aclose()

    async def _check_methods(self) -> None:
        """Full mode when the service lists every extension; core mode when it lists the generated
        verbs of every rootobject of ``agent_data.oschema`` (the start-up log says what that costs);
        else one clear error naming what is missing."""
        doc = await self._call("rpc.discover", {}, self._default_context, check=False)
        self._methods = methods_in(doc)
        missing = sorted(REQUIRED_METHODS - self._methods - {"rpc.discover"})
        if missing:
            core_missing = sorted(CORE_METHODS - self._methods)
            if core_missing:
                raise OsisProtocolError(
                    f"OSIS store at {self.where} lacks {len(core_missing)} generated method(s) of "
                    "agent_data.oschema hero-agent needs: " + ", ".join(core_missing)
                )
            if self._core is None:
                self._core = CoreMode(self._call, self._default_context, self._retries)
                _log_core_mode(self.where, missing)
        else:
            self._core = None
        self._optional = frozenset(methods_in(doc) & OPTIONAL_METHODS)
        self._checked = True

    @property
    def mode(self) -> str:
        """``full`` (every extension) or ``core`` (the generated verbs only); known after ``open``."""
        return "core" if self._core is not None else "full"

    async def ping(self) -> None:
        if self._core is not None:
            await self._call("rpc.discover", {}, self._default_context, check=False)
            return
        await self._call("store.ping", {}, self._default_context)

    def counters(self) -> dict[str, int]:
        """Failed attempts by reason, and (core mode) what the client did in place of an extension,
        as ``core:<event>``."""
        out = dict(self._events)
        if self._core is not None:
            out.update({f"core:{k}": v for k, v in self._core.events.items()})
        return out

    # -- transport ----------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        params: dict[str, Any],
        context: str,
        *,
        check: bool = True,
        retries: int | None = None,
    ) -> Any:
        """One call. Every call this engine makes is safe to repeat (see the module docstring), so
        each is retried on connection errors, timeouts and gateway statuses -- never after an answer.
        ``retries=0``: one attempt (core mode's creates look their request key up before a repeat)."""
        if check:
            await self._ready()
        self._next_id += 1
        body = encode({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})

        async def send() -> Any:
            return answer_of(await self._send(body, context), self.where)

        return await self._retrying(method, send, retries)

    async def _call_many(
        self, calls: builtins.list[tuple[str, dict[str, Any]]], context: str
    ) -> builtins.list[Any]:
        """Several calls as ONE JSON-RPC batch (one round trip; the server runs them in order, every
        one of them). Each call's result, or its error as a StoreError, in the order of ``calls``."""
        await self._ready()
        ids = []
        payload = []
        for method, params in calls:
            self._next_id += 1
            ids.append(self._next_id)
            payload.append({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        body = encode(payload)

        async def send() -> Any:
            return await self._send(body, context)

        raw = await self._retrying("batch", send)
        if isinstance(raw, dict):  # the batch as a whole was refused
            answer_of(raw, self.where)
        if not isinstance(raw, list):
            raise OsisProtocolError(f"OSIS store at {self.where} answered a batch with a malformed response")
        by_id = {a.get("id"): a for a in raw if isinstance(a, dict)}
        out: builtins.list[Any] = []
        for call_id in ids:
            if call_id not in by_id:
                raise OsisProtocolError(f"OSIS store at {self.where} answered a batch without call {call_id}")
            try:
                out.append(answer_of(by_id[call_id], self.where))
            except RemoteError as exc:
                out.append(store_error_for(exc.code, exc.message, exc.data))
        return out

    async def _ready(self) -> None:
        if self._client is None:
            raise StoreUnavailable("the osis engine is closed")
        if not self._checked:
            await self._check_methods()

    async def _retrying(
        self, label: str, send: Callable[[], Awaitable[Any]], retries: int | None = None
    ) -> Any:
        """Each attempt runs under ONE deadline of ``store.timeout_s`` for the whole exchange.

        httpx's timeouts bound each socket operation, not the request: a server that answers a byte
        at a time (a stalled proxy, a peer dying slowly) would hold a call forever with every single
        read inside its limit. The deadline makes ``timeout_s`` what the docs say it is, the longest
        one attempt may take; an attempt cut by it is retried like any other timeout (every call is
        safe to repeat)."""
        attempts = 1 + (self._retries if retries is None else retries)
        for attempt in range(attempts):
            try:
                with anyio.fail_after(self._attempt_s):
                    return await send()
            except RemoteError as exc:
                raise store_error_for(exc.code, exc.message, exc.data) from None
            except (httpx.TransportError, Retryable, TimeoutError) as exc:
                self._events[_failure_reason(exc)] += 1
                if attempt + 1 >= attempts:
                    self._events["unreachable"] += 1
                    log.warning("osis.unreachable", method=label, url=self.where, error=type(exc).__name__)
                    raise StoreUnavailable(f"OSIS store unreachable at {self.where}") from None
                await anyio.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
        raise AssertionError("unreachable")

    async def _send(self, body: bytes, context: str) -> Any:
        """POST one request body; the decoded JSON answer (HTTP-level failures raised)."""
        if self._client is None:
            raise StoreUnavailable("the osis engine is closed")
        headers = {CONTEXT_HEADER: context, "Content-Type": "application/json"}
        resp = await self._client.post(self.endpoint, content=body, headers=headers)
        if resp.status_code in _RETRY_STATUS:
            raise Retryable
        if resp.status_code == 413:
            raise InvalidInput(f"request too large for the OSIS store at {self.where}")
        if resp.status_code == 401:
            raise OsisAuthError(f"OSIS store at {self.where} refused the credentials (check store.secret)")
        try:
            return resp.json()
        except ValueError:
            raise OsisProtocolError(
                f"OSIS store at {self.where} answered HTTP {resp.status_code} without JSON-RPC"
            ) from None

    # -- the engine seam ----------------------------------------------------------------------

    async def get_lease(self, scope: Scope, key: str) -> Lease | None:
        """None from a service without ``agentlease.get``: its dead holders are only seen to lapse."""
        await self._ready()
        if self._core is not None:
            return self._core.get_lease(scope, key)
        if "agentlease.get" not in self._optional:
            return None
        answer = await self._call("agentlease.get", {"user_id": scope.user_id, "key": key}, scope.context)
        return None if answer is None else _lease(answer, self.where)

    async def list_leases(self, context: str, prefix: str) -> builtins.list[Lease]:
        """Empty from a service without ``agentlease.list`` (a daemon start then marks nothing: the
        conversations' next turns do)."""
        await self._ready()
        if self._core is not None:
            return self._core.list_leases(context, prefix)
        if "agentlease.list" not in self._optional:
            return []
        answer = await self._call("agentlease.list", {"prefix": prefix}, context)
        if not isinstance(answer, builtins.list):
            raise OsisProtocolError(f"OSIS store at {self.where} answered agentlease.list without a list")
        return [_lease(item, self.where) for item in answer]

    async def batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        """A required claim is sent alone first (a refused one stops the batch, as the seam says); the
        steps between required claims go as ONE JSON-RPC batch: one round trip, and the server runs
        all of them in order (a failing step does not stop the later ones there); the first failure,
        in step order, is raised here."""
        await self._ready()  # the optional methods are known from here on
        if self._core is not None:
            return await self._core_batch(scope, steps)
        out: builtins.list[object] = []
        group: builtins.list[Step] = []
        for step in steps:
            if isinstance(step, ClaimStep) and step.required:
                out += await self._group(scope, group)
                group = []
                out.append(await self._step(scope, step))
            elif isinstance(step, MarkCutStep) and "store.mark_interrupted" not in self._optional:
                # an older service: the marks are read and written by plain calls, in step order
                out += await self._group(scope, group)
                group = []
                out.append(await self.mark_cut(scope, step.conversation_id))
            else:
                group.append(step)
        out += await self._group(scope, group)
        return Results(steps, out)

    async def _core_batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        """Core mode: one step after another, each its own call(s); cut-turn marks as plain steps."""
        assert self._core is not None
        out: builtins.list[object] = []
        for step in steps:
            if isinstance(step, MarkCutStep):
                repeated = await self._core.answered_here(scope, step.conversation_id, step.request_key)
                out.append([] if repeated else await self.mark_cut(scope, step.conversation_id))
            else:
                out.append(await self._core.run(scope, step))
        return Results(steps, out)

    async def _group(self, scope: Scope, steps: builtins.list[Step]) -> builtins.list[object]:
        if len(steps) <= 1:
            return [await self._step(scope, step) for step in steps]
        out: builtins.list[object] = []
        for start in range(0, len(steps), MAX_BATCH):
            chunk = steps[start : start + MAX_BATCH]
            answers = await self._call_many([self._plan(scope, s) for s in chunk], scope.context)
            for step, answer in zip(chunk, answers, strict=True):
                out.append(await self._outcome(scope, step, answer))
        return out

    def _plan(self, scope: Scope, step: Step) -> tuple[str, dict[str, Any]]:
        """The call of ``step``; an older service (no ``agentlease.get``) gets claims without the
        owner and replace params it would refuse."""
        method, params = plan(scope, step)
        if isinstance(step, ClaimStep) and "agentlease.get" not in self._optional:
            params.pop("owner", None)
            params.pop("replace", None)
        return method, params

    async def _step(self, scope: Scope, step: Step) -> object:
        if isinstance(step, MarkCutStep):
            await self._ready()
            if "store.mark_interrupted" not in self._optional:
                return await self.mark_cut(scope, step.conversation_id)
        method, params = self._plan(scope, step)
        try:
            answer = await self._call(method, params, scope.context)
        except StoreError as exc:
            answer = exc
        return await self._outcome(scope, step, answer)

    async def _outcome(self, scope: Scope, step: Step, answer: Any) -> object:
        """What ``step`` returns, from the server's answer (or its error)."""
        if isinstance(answer, StoreError):
            if isinstance(step, GetStep | UpdateStep) and isinstance(answer, NotFound):
                return None
            raise answer
        result = ANSWERS[type(step)](answer)
        if isinstance(step, CreateStep | UpdateStep) and isinstance(result, str):
            return await self._fetch_set(step.kind, scope, result)
        return settled(step, result)

    async def _fetch_set(self, kind: Kind, scope: Scope, sid: str) -> Record:
        """Plain OSIS answers ``set`` with the sid alone: the record is read back."""
        rec = await self.get(kind, scope, sid)
        if rec is None:
            raise StoreUnavailable(f"OSIS store at {self.where} lost {kind.value} {sid!r} right after set")
        return rec

    async def contexts(self) -> builtins.list[str]:
        """Core mode: a generated server cannot list its contexts: the configured one, the reserved
        ``_system`` and those this process wrote to, each when it holds records."""
        await self._ready()
        if self._core is not None:
            return await self._core.contexts()
        result = await self._call("store.contexts", {}, self._default_context)
        return [str(c) for c in result]

    async def dump(self, context: str) -> AsyncIterator[tuple[Kind, Record]]:
        await self._ready()
        if self._core is not None:
            async for item in self._core.dump(context):
                yield item
            return
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": DUMP_PAGE}
            if cursor:
                params["cursor"] = cursor
            page = await self._call("store.dump", params, context)
            for item in page["items"]:
                yield Kind(item["kind"]), record_of(item["record"])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def restore_batch(self, items: Sequence[tuple[Kind, Record]]) -> int:
        """Chunks of one context each, every chunk one transaction on the server (not the whole batch).
        Core mode: record by record, with new sids (see CoreMode.restore_batch)."""
        await self._ready()
        if self._core is not None:
            return await self._core.restore_batch(items)
        written = 0
        chunk: builtins.list[dict[str, Any]] = []
        size = 0
        context = ""
        for kind, record in items:
            ctx = record.get("context")
            if not isinstance(ctx, str):
                raise InvalidInput("a restored record needs its context")
            line = len(json.dumps(record))
            if chunk and (ctx != context or len(chunk) >= RESTORE_BATCH or size + line > _CHUNK_BYTES):
                written += await self._restore_chunk(chunk, context)
                chunk, size = [], 0
            context = ctx
            chunk.append({"kind": kind.value, "record": record})
            size += line
        if chunk:
            written += await self._restore_chunk(chunk, context)
        return written

    async def _restore_chunk(self, chunk: builtins.list[dict[str, Any]], context: str) -> int:
        return int(await self._call("store.restore_batch", {"items": chunk}, context))

    async def rename_user(self, context: str, old: str, new: str, *, merge: bool = False) -> dict[str, int]:
        """``store.rename_user``: one transaction on the server, when the server offers it."""
        await self._ready()
        if "store.rename_user" not in self._methods:
            raise UnsupportedOperation(f"the OSIS store at {self.where} does not offer store.rename_user")
        params = {"from_user": old, "to_user": new, "merge": merge}
        result = await self._call("store.rename_user", params, context)
        return {str(k): int(v) for k, v in result.items()}

    async def restore(self, kind: Kind, record: Record) -> bool:
        await self._ready()
        if self._core is not None:
            return await self._core.restore_batch([(kind, record)]) == 1
        context = record.get("context")
        if not isinstance(context, str):
            raise InvalidInput("a restored record needs its context")
        return bool(await self._call(f"{kind.rpc_name}.restore", {"record": record}, context))


#: the generated verbs of every declared rootobject: what core mode needs
CORE_METHODS: frozenset[str] = frozenset(
    f"{kind.rpc_name}.{verb}" for kind in Kind for verb in ("get", "set", "delete", "exist", "list")
)
#: what each missing extension costs in core mode (the start-up log)
CORE_COSTS: dict[str, str] = {
    "agentlease": "turn locks are held in this process: ONLY ONE daemon may write to this store",
    "count": "counts read the records (one call per 100)",
    "restore": "an import creates records anew (new sids), one call per record and one to find it",
    "store.dump": "an export reads the users' records kind by kind, one call per 100",
    "store.contexts": "an export without --context covers store.context only",
    "store.restore_batch": "an import writes record by record",
    "set with request_key": "a create with a key first looks it up (one more call)",
    "seq": "a message costs 3 calls (conversation read, message, conversation count)",
    "text search": "search runs here over the memories, or the newest 200 messages of 10 conversations",
}


def _log_core_mode(where: str, missing: Sequence[str]) -> None:
    """The start-up warning of core mode: the mode, and what each missing extension costs."""
    log.warning(
        "osis.core_mode",
        url=where,
        missing_extensions=len(missing),
        warning="only one hero-agent daemon may write to this store (turn locks are held in-process)",
    )
    for name, cost in CORE_COSTS.items():
        log.info("osis.core_mode.cost", extension=name, cost=cost)


def unix_socket_path(url: str) -> str | None:
    """The socket of a ``unix:///path`` store URL; None for an HTTP URL."""
    if not url.startswith("unix://"):
        return None
    path = url[len("unix://") :]
    if not path.startswith("/"):
        raise StoreError(f"store.url {url!r}: a unix socket URL names an absolute path (unix:///run/x.sock)")
    return path


def _failure_reason(exc: Exception) -> str:
    """Why an attempt failed: our whole-attempt deadline, an httpx timeout, the connection, a gateway."""
    if isinstance(exc, Retryable):
        return "gateway"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.TransportError):
        return "connection"
    return "deadline"


def _lease(value: Any, where: str) -> Lease:
    try:
        return Lease.from_json(value)
    except ValueError as exc:
        raise OsisProtocolError(f"OSIS store at {where} answered a malformed lease: {exc}") from None
