"""Server side of the OSIS protocol: one JSON-RPC call -> one :class:`~store.engine.Engine` call.

Transport concerns (HTTP, auth, batches, size limits) live in :mod:`store.osis.server`; this module only
knows methods, params and engines. ``store.dump`` pages are served from a background task per dump
that walks ``Engine.dump`` once (an async generator must stay in one task), so paging a large context
costs one pass; a cursor that does not match a live dump (a retried page, a restarted server) restarts
the walk and skips the records already delivered.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from store.engine import Engine, ListQuery, MarkCutStep
from store.errors import InvalidInput, StoreError
from store.leases import LeaseOwner
from store.models import Kind, Record, Scope, validate_sid, validate_user
from store.osis.protocol import (
    DUMP_PAGE,
    INVALID_PARAMS,
    KIND_BY_OBJECT,
    METHOD_NOT_FOUND,
    METHODS,
    NOT_FOUND,
    UNAVAILABLE,
    check_params,
    error_code_for,
    openrpc_document,
)

log = structlog.get_logger()

#: a dump nobody pages on for this long is dropped (its cursor then restarts the walk)
DUMP_IDLE_S = 60.0

_DumpItem = tuple[Kind, Record] | BaseException


class RpcError(Exception):
    """A JSON-RPC error answer: ``code``, one-line ``message``, optional ``data``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass(slots=True)
class _Dump:
    context: str
    receive: MemoryObjectReceiveStream[_DumpItem]
    position: int = 0
    lock: anyio.Lock = field(default_factory=anyio.Lock)


class Dispatcher:
    """Runs OSIS calls against one engine. An async context manager (it owns the dump tasks)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._tg: TaskGroup | None = None
        self._dumps: dict[str, _Dump] = {}

    async def __aenter__(self) -> Dispatcher:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        self._tg = None
        for dump in self._dumps.values():
            dump.receive.close()
        self._dumps.clear()

    async def call(self, method: str, params: Any, context: str) -> Any:
        """The result of one call; raises :class:`RpcError` for every failure."""
        spec = METHODS.get(method)
        if spec is None:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {method[:100]}")
        try:
            args = check_params(spec, params)
        except ValueError as exc:
            raise RpcError(INVALID_PARAMS, str(exc)) from None
        obj, _, verb = method.partition(".")
        try:
            if obj in KIND_BY_OBJECT:
                return await self._object_call(KIND_BY_OBJECT[obj], verb, args, context)
            return await self._store_call(method, args, context)
        except StoreError as exc:
            code = error_code_for(exc)
            data = None
            if code == NOT_FOUND:
                data = {"kind": getattr(exc, "kind", ""), "sid": getattr(exc, "sid", "")}
            raise RpcError(code, str(exc), data) from None

    async def _object_call(self, kind: Kind, verb: str, args: dict[str, Any], context: str) -> Any:
        if verb == "restore":
            rec = args["record"]
            if rec.get("context") != context:
                raise InvalidInput("record context differs from the X-Hero-Context header")
            return await self.engine.restore(kind, rec)
        scope = _scope(context, args["user_id"])
        handler = _VERBS[verb]
        return await handler(self, kind, scope, args)

    async def _get(self, kind: Kind, scope: Scope, args: dict[str, Any]) -> Record:
        sid = _sid(args["sid"])
        rec = await self.engine.get(kind, scope, sid)
        if rec is None:
            raise RpcError(NOT_FOUND, f"{kind.value} {sid!r} not found", {"kind": kind.value, "sid": sid})
        return rec

    async def _set(self, kind: Kind, scope: Scope, args: dict[str, Any]) -> dict[str, Any]:
        fields = args["object"]
        if "sid" in args:
            if "request_key" in args:
                raise RpcError(INVALID_PARAMS, "param 'request_key' is for creates only (no 'sid')")
            sid = _sid(args["sid"])
            rec = await self.engine.update(kind, scope, sid, fields)
            if rec is None:
                raise RpcError(NOT_FOUND, f"{kind.value} {sid!r} not found", {"kind": kind.value, "sid": sid})
        else:
            rec = await self.engine.create(kind, scope, fields, request_key=args.get("request_key"))
        return {"sid": rec["sid"], "object": rec}

    async def _delete(self, kind: Kind, scope: Scope, args: dict[str, Any]) -> bool:
        return await self.engine.delete(kind, scope, _sid(args["sid"]))

    async def _exist(self, kind: Kind, scope: Scope, args: dict[str, Any]) -> bool:
        return await self.engine.get(kind, scope, _sid(args["sid"])) is not None

    async def _list(self, kind: Kind, scope: Scope, args: dict[str, Any]) -> dict[str, Any]:
        order = args.get("order") or "created_at"
        query = ListQuery(
            filters=args.get("filter") or {},
            order_by=order.lstrip("-"),
            descending=order.startswith("-"),
            limit=args.get("limit", 50),
            cursor=args.get("cursor"),
            text=args.get("text"),
        )
        page = await self.engine.list(kind, scope, query)
        return {"items": page.items, "next_cursor": page.next_cursor}

    async def _count(self, kind: Kind, scope: Scope, args: dict[str, Any]) -> int:
        return await self.engine.count(kind, scope, args.get("filter") or None)

    async def _store_call(self, method: str, args: dict[str, Any], context: str) -> Any:
        if method == "agentlease.claim":
            scope = _scope(context, args["user_id"])
            owner = LeaseOwner.from_json(args.get("owner"))
            if args.get("owner") is not None and owner is None:
                raise RpcError(INVALID_PARAMS, "param 'owner': needs a host string, pid and started integers")
            outcome = await self.engine.claim(
                scope,
                args["key"],
                args["holder"],
                args["ttl_ms"],
                owner=owner,
                replace=args.get("replace"),
            )
            # a client that sends the owner param (null: unknown) reads the outcome's name; older
            # clients, which never send it, read a boolean
            return outcome.value if "owner" in args else bool(outcome)
        if method == "agentlease.get":
            lease = await self.engine.get_lease(_scope(context, args["user_id"]), args["key"])
            return None if lease is None else lease.to_json()
        if method == "agentlease.list":
            return [lease.to_json() for lease in await self.engine.list_leases(context, args["prefix"])]
        if method == "store.mark_interrupted":
            scope = _scope(context, args["user_id"])
            step = MarkCutStep(_sid(args["conversation_id"]), args.get("request_key"))
            (created,) = await self.engine.batch(scope, [step])  # one transaction where the engine can
            return created
        if method == "agentlease.release":
            await self.engine.release(_scope(context, args["user_id"]), args["key"], args["holder"])
            return None
        if method == "store.contexts":
            return await self.engine.contexts()
        if method == "store.dump":
            return await self._dump_page(context, args.get("cursor"), args.get("limit", DUMP_PAGE))
        if method == "store.restore_batch":
            return await self.engine.restore_batch(_restore_items(args["items"], context))
        if method == "store.ping":
            await self.engine.ping()
            return "pong"
        if method == "store.rename_user":
            old, new = validate_user(args["from_user"]), validate_user(args["to_user"])
            return await self.engine.rename_user(context, old, new, merge=bool(args.get("merge", False)))
        return openrpc_document()  # rpc.discover

    # -- paged dump ---------------------------------------------------------------------------

    async def _dump_page(self, context: str, cursor: str | None, limit: int) -> dict[str, Any]:
        token, position = _parse_cursor(cursor)
        dump = self._dumps.get(token)
        if dump is None or dump.context != context or dump.position != position:
            if dump is not None and not dump.lock.locked():
                self._dumps.pop(token, None)
                dump.receive.close()  # its walker stops at its next record
            token, dump = self._start_dump(context)
            skip = position
        else:
            skip = 0
        async with dump.lock:
            items: list[dict[str, Any]] = []
            done = False
            while len(items) < limit:
                try:
                    item = await dump.receive.receive()
                except anyio.EndOfStream:
                    done = True
                    break
                except anyio.ClosedResourceError:
                    raise RpcError(UNAVAILABLE, "the dump was restarted meanwhile; retry the page") from None
                if isinstance(item, BaseException):
                    self._dumps.pop(token, None)
                    dump.receive.close()
                    raise item
                if skip:
                    skip -= 1
                    continue
                items.append({"kind": item[0].value, "record": item[1]})
            dump.position = position + len(items)
        if done:
            self._dumps.pop(token, None)
            dump.receive.close()
            return {"items": items, "next_cursor": None}
        return {"items": items, "next_cursor": f"{token}.{dump.position}"}

    def _start_dump(self, context: str) -> tuple[str, _Dump]:
        assert self._tg is not None, "Dispatcher used outside its async context"
        send, receive = anyio.create_memory_object_stream[_DumpItem](DUMP_PAGE)
        token = secrets.token_hex(8)
        dump = _Dump(context, receive)
        self._dumps[token] = dump
        self._tg.start_soon(self._pump, token, context, send)
        return token, dump

    async def _pump(self, token: str, context: str, send: MemoryObjectSendStream[_DumpItem]) -> None:
        """Walk the dump into the stream; the reader drops the session when it sees the end."""
        async with send:
            try:
                async for kind, rec in self.engine.dump(context):
                    with anyio.move_on_after(DUMP_IDLE_S) as idle:
                        await send.send((kind, rec))
                    if idle.cancelled_caught:
                        log.info("osis.dump_abandoned", context=context)
                        dump = self._dumps.pop(token, None)
                        if dump is not None:
                            dump.receive.close()
                        return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._dumps.pop(token, None)
            except StoreError as exc:
                with anyio.move_on_after(DUMP_IDLE_S):
                    await send.send(exc)


_VERBS: dict[str, Callable[[Dispatcher, Kind, Scope, dict[str, Any]], Awaitable[Any]]] = {
    "get": Dispatcher._get,
    "set": Dispatcher._set,
    "delete": Dispatcher._delete,
    "exist": Dispatcher._exist,
    "list": Dispatcher._list,
    "count": Dispatcher._count,
}


def _scope(context: str, user_id: str) -> Scope:
    try:
        validate_user(user_id)
    except InvalidInput as exc:
        raise RpcError(INVALID_PARAMS, f"param 'user_id': {exc}") from None
    return Scope(context, user_id)


def _sid(sid: str) -> str:
    try:
        return validate_sid(sid)
    except InvalidInput as exc:
        raise RpcError(INVALID_PARAMS, f"param 'sid': {exc}") from None


def _restore_items(items: list[Any], context: str) -> list[tuple[Kind, Record]]:
    out: list[tuple[Kind, Record]] = []
    for n, item in enumerate(items):
        kind = item.get("kind") if isinstance(item, dict) else None
        record = item.get("record") if isinstance(item, dict) else None
        if not isinstance(kind, str) or kind not in Kind._value2member_map_ or not isinstance(record, dict):
            raise RpcError(INVALID_PARAMS, f"param 'items'[{n}]: needs a known 'kind' and a 'record' object")
        if record.get("context") != context:
            raise InvalidInput(f"items[{n}]: record context differs from the X-Hero-Context header")
        out.append((Kind(kind), record))
    return out


def _parse_cursor(cursor: str | None) -> tuple[str, int]:
    if not cursor:
        return "", 0
    token, _, pos = cursor.rpartition(".")
    if not pos.isdigit():
        raise RpcError(INVALID_PARAMS, "param 'cursor': not a store.dump cursor")
    return token, int(pos)
