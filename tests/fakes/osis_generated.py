"""A strict generated-CRUD OSIS server, built from ``agent_data.oschema`` when the tests run.

It assumes the least of a hero_osis built from the schema (docs/osis.md, "Core mode"): for each declared
rootobject exactly the five generated verbs, nothing else (``rpc.discover`` lists them):

* ``<object>.get {sid}`` -> the object (with its ``sid``), -32001 when missing;
* ``<object>.set {object, sid?}`` -> the sid: without ``sid`` a create (the server allocates the sid),
  with one a replace of the whole object (no merge); every non-optional field must be there;
* ``<object>.delete {sid}`` -> bool, ``<object>.exist {sid}`` -> bool;
* ``<object>.list {filter?, limit?}`` -> a list of objects: plain equality on declared fields, a
  limit of at most 100, the items in no particular order (shuffled), no order, cursor or offset.

Undeclared fields of a ``set`` are dropped (and recorded in :attr:`dropped`), values are type-checked
against the schema (-32602), unknown methods answer -32601, ``X-Hero-Context`` is required, JSON-RPC
batches are refused. It scopes nothing by user: that is the client's job in core mode.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from store.osis.oschema import RootObject, parse, type_ok
from tests.fakes.served import ServedApp

SCHEMA = Path(__file__).resolve().parents[2] / "store" / "osis" / "agent_data.oschema"
MAX_LIST = 100
_CONTEXT_RE_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


class CallError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class GeneratedOsis(ServedApp):
    """The strict server; :attr:`calls` counts calls by method, :attr:`dropped` the undeclared fields
    each object was sent (``{"AgentMessage": {"bogus"}}``)."""

    def __init__(self, schema_text: str | None = None) -> None:
        self.objects: dict[str, RootObject] = {
            o.rpc_name: o for o in parse(schema_text or SCHEMA.read_text(encoding="utf-8")).values()
        }
        #: context -> rpc object name -> sid -> record
        self.data: dict[str, dict[str, dict[str, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
        self.calls: dict[str, int] = defaultdict(int)
        self.dropped: dict[str, set[str]] = defaultdict(set)
        self._next = random.randrange(36**3, 36**4)

    # -- serving -------------------------------------------------------------------------------

    def build_app(self) -> Starlette:
        return Starlette(routes=[Route("/hero_osis_ai/rpc", self._rpc, methods=["POST"])])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hero_osis"

    def methods(self) -> list[str]:
        return sorted(
            f"{name}.{verb}" for name in self.objects for verb in ("get", "set", "delete", "exist", "list")
        )

    async def _rpc(self, request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(None, -32700, "parse error")
        if not isinstance(body, dict):
            return _error(None, -32600, "batches are not supported")
        call_id = body.get("id")
        method = body.get("method")
        params = body.get("params") or {}
        if method == "rpc.discover":
            doc = {"openrpc": "1.2.6", "methods": [{"name": m, "params": []} for m in self.methods()]}
            return JSONResponse({"jsonrpc": "2.0", "id": call_id, "result": doc})
        context = request.headers.get("X-Hero-Context", "")
        if not context or not set(context) <= _CONTEXT_RE_CHARS | {"_"}:
            return _error(call_id, -32600, "missing or invalid X-Hero-Context")
        try:
            result = self._dispatch(context, str(method), params)
        except CallError as exc:
            return _error(call_id, exc.code, exc.message)
        return JSONResponse({"jsonrpc": "2.0", "id": call_id, "result": result})

    # -- the five verbs ------------------------------------------------------------------------

    def _dispatch(self, context: str, method: str, params: Any) -> Any:
        name, _, verb = method.partition(".")
        obj = self.objects.get(name)
        if obj is None or verb not in ("get", "set", "delete", "exist", "list"):
            raise CallError(-32601, f"method not found: {method}")
        if not isinstance(params, dict):
            raise CallError(-32602, "params must be an object")
        self.calls[method] += 1
        allowed = {"get": {"sid"}, "delete": {"sid"}, "exist": {"sid"}, "set": {"object", "sid"}}
        unknown = set(params) - allowed.get(verb, {"filter", "limit"})
        if unknown:
            raise CallError(-32602, f"unknown param {sorted(unknown)[0]!r}")
        table = self.data[context][name]
        if verb == "list":
            return self._list(obj, table, params)
        sid = params.get("sid")
        if sid is not None and not isinstance(sid, str):
            raise CallError(-32602, "param 'sid' must be a string")
        if verb == "set":
            return self._set(obj, table, params.get("object"), sid)
        if sid is None:
            raise CallError(-32602, "missing param 'sid'")
        if verb == "get":
            if sid not in table:
                raise CallError(-32001, f"{obj.name} {sid} not found")
            return {**table[sid], "sid": sid}
        if verb == "delete":
            return table.pop(sid, None) is not None
        return sid in table

    def _set(self, obj: RootObject, table: dict[str, dict[str, Any]], value: Any, sid: str | None) -> str:
        if not isinstance(value, dict):
            raise CallError(-32602, "param 'object' must be an object")
        kept: dict[str, Any] = {}
        for key, item in value.items():
            field = obj.fields.get(key)
            if field is None:
                if key != "sid":
                    self.dropped[obj.name].add(key)
                continue
            if not type_ok(field.type, item):
                raise CallError(-32602, f"{obj.name}.{key} must be {field.type}")
            kept[key] = item
        missing = [f.name for f in obj.fields.values() if not f.optional and f.name not in kept]
        if missing:
            raise CallError(-32602, f"{obj.name} lacks {', '.join(missing)}")
        if sid is None:
            sid = self._allocate()
        elif sid not in table:
            raise CallError(-32001, f"{obj.name} {sid} not found")
        table[sid] = kept
        return sid

    def _list(self, obj: RootObject, table: dict[str, dict[str, Any]], params: dict[str, Any]) -> list[Any]:
        flt = params.get("filter") or {}
        limit = params.get("limit", MAX_LIST)
        if not isinstance(flt, dict):
            raise CallError(-32602, "param 'filter' must be an object")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST:
            raise CallError(-32602, f"param 'limit' must be 1-{MAX_LIST}")
        for key, want in flt.items():
            field = obj.fields.get(key)
            if field is None:
                raise CallError(-32602, f"{obj.name} has no field {key!r} to filter on")
            if not type_ok(field.type, want):
                raise CallError(-32602, f"filter {key!r} must be {field.type}")
        items = [
            {**rec, "sid": sid}
            for sid, rec in table.items()
            if all(rec.get(key) == want for key, want in flt.items())
        ]
        random.shuffle(items)
        return items[:limit]

    def _allocate(self) -> str:
        self._next += random.randrange(1, 50)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"
        n, out = self._next, ""
        while n:
            n, r = divmod(n, 36)
            out = digits[r] + out
        return out


def _error(call_id: Any, code: int, message: str) -> JSONResponse:
    return JSONResponse({"jsonrpc": "2.0", "id": call_id, "error": {"code": code, "message": message}})
