"""The OSIS JSON-RPC protocol on the wire: raw requests against a real server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from store.models import Kind
from store.osis.protocol import (
    CONTEXT_HEADER,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_BODY_BYTES,
    METHOD_NOT_FOUND,
    METHODS,
    NOT_FOUND,
    PARSE_ERROR,
    UNAUTHORIZED,
    endpoint_for,
)
from tests.store.osis_fixtures import ServedEngine, embedded_server

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
SECRET = "s3cret-token-xyz"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[ServedEngine]:
    async with embedded_server(tmp_path / "srv") as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def call(method: str, params: Any = None, id_: Any = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id_}
    if params is not None:
        body["params"] = params
    return body


async def rpc(
    http: httpx.AsyncClient, url: str, body: Any, context: str | None = "default", **headers: str
) -> httpx.Response:
    hdrs = dict(headers)
    if context is not None:
        hdrs[CONTEXT_HEADER] = context
    return await http.post(url, content=json.dumps(body), headers=hdrs)


async def test_create_get_roundtrip_and_set_result_shape(
    served: ServedEngine, http: httpx.AsyncClient
) -> None:
    r = await rpc(
        http, served.rpc_url, call("agentconversation.set", {"user_id": "ann", "object": {"title": "t"}})
    )
    answer = r.json()
    assert r.status_code == 200 and answer["id"] == 1
    sid = answer["result"]["sid"]
    assert answer["result"]["object"]["title"] == "t" and sid.isalnum() and sid == sid.lower()
    got = (
        await rpc(http, served.rpc_url, call("agentconversation.get", {"user_id": "ann", "sid": sid}))
    ).json()
    assert got["result"]["sid"] == sid and got["result"]["user_id"] == "ann"
    exist = await rpc(http, served.rpc_url, call("agentconversation.exist", {"user_id": "bob", "sid": sid}))
    assert exist.json()["result"] is False


async def test_short_rpc_path_is_accepted(served: ServedEngine, http: httpx.AsyncClient) -> None:
    r = await rpc(http, f"http://127.0.0.1:{served.port}/rpc", call("store.ping"))
    assert r.json()["result"] == "pong"


async def test_bad_json_is_a_parse_error(served: ServedEngine, http: httpx.AsyncClient) -> None:
    r = await http.post(
        served.rpc_url, content=b'{"jsonrpc": "2.0", "method": ', headers={CONTEXT_HEADER: "x"}
    )
    assert r.status_code == 200
    assert r.json()["error"]["code"] == PARSE_ERROR and r.json()["id"] is None
    junk = await http.post(served.rpc_url, content=b"\xff\xfe\x00junk", headers={CONTEXT_HEADER: "x"})
    assert junk.json()["error"]["code"] == PARSE_ERROR
    deep = await http.post(
        served.rpc_url, content=b"[" * 200_000 + b"]" * 200_000, headers={CONTEXT_HEADER: "x"}
    )
    assert deep.json()["error"]["code"] == PARSE_ERROR


async def test_unknown_method(served: ServedEngine, http: httpx.AsyncClient) -> None:
    r = await rpc(http, served.rpc_url, call("agentconversation.explode", {"user_id": "a"}, id_="x"))
    assert r.json()["error"]["code"] == METHOD_NOT_FOUND and r.json()["id"] == "x"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"sid": "01"}, "user_id"),
        ({"user_id": "ann"}, "sid"),
        ({"user_id": "ann", "sid": "Bad Sid!"}, "sid"),
        ({"user_id": 7, "sid": "01"}, "user_id"),
        ({"user_id": "", "sid": "01"}, "user_id"),
        ({"user_id": "ann", "sid": "01", "bogus": 1}, "bogus"),
        (["ann", "01"], "named"),
    ],
)
async def test_wrong_params_name_the_param(
    served: ServedEngine, http: httpx.AsyncClient, params: Any, named: str
) -> None:
    r = await rpc(http, served.rpc_url, call("agentmessage.get", params))
    err = r.json()["error"]
    assert err["code"] == INVALID_PARAMS and named in err["message"]


async def test_wrong_param_type_in_list(served: ServedEngine, http: httpx.AsyncClient) -> None:
    r = await rpc(http, served.rpc_url, call("agentmessage.list", {"user_id": "a", "limit": "ten"}))
    assert r.json()["error"]["code"] == INVALID_PARAMS and "limit" in r.json()["error"]["message"]
    r = await rpc(http, served.rpc_url, call("agentmessage.list", {"user_id": "a", "limit": True}))
    assert r.json()["error"]["code"] == INVALID_PARAMS


async def test_invalid_request_objects(served: ServedEngine, http: httpx.AsyncClient) -> None:
    for body in (
        {"jsonrpc": "1.0", "method": "store.ping", "id": 1},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "method": "store.ping", "id": True},
        42,
    ):
        r = await rpc(http, served.rpc_url, body)
        assert r.json()["error"]["code"] == INVALID_REQUEST, body


async def test_missing_object_is_not_found_with_data(served: ServedEngine, http: httpx.AsyncClient) -> None:
    r = await rpc(http, served.rpc_url, call("agentmemory.get", {"user_id": "ann", "sid": "zz9"}))
    err = r.json()["error"]
    assert err["code"] == NOT_FOUND and err["data"]["sid"] == "zz9"


async def test_context_header_is_required_and_validated(
    served: ServedEngine, http: httpx.AsyncClient
) -> None:
    body = call("agentconversation.list", {"user_id": "ann"})
    missing = (await rpc(http, served.rpc_url, body, context=None)).json()
    assert missing["error"]["code"] == INVALID_REQUEST and CONTEXT_HEADER in missing["error"]["message"]
    bad = (await rpc(http, served.rpc_url, body, context="Not A Context!")).json()
    assert bad["error"]["code"] == INVALID_REQUEST and CONTEXT_HEADER in bad["error"]["message"]
    # discovery alone needs no context
    assert "result" in (await rpc(http, served.rpc_url, call("rpc.discover"), context=None)).json()


async def test_contexts_never_mix(served: ServedEngine, http: httpx.AsyncClient) -> None:
    made = await rpc(
        http,
        served.rpc_url,
        call("agentmemory.set", {"user_id": "ann", "object": {"content": "x"}}),
        context="work",
    )
    sid = made.json()["result"]["sid"]
    other = await rpc(
        http, served.rpc_url, call("agentmemory.get", {"user_id": "ann", "sid": sid}), context="home"
    )
    assert other.json()["error"]["code"] == NOT_FOUND
    listed = await rpc(http, served.rpc_url, call("agentmemory.list", {"user_id": "ann"}), context="home")
    assert listed.json()["result"]["items"] == []


async def test_batch_answers_in_order_and_skips_notifications(
    served: ServedEngine, http: httpx.AsyncClient
) -> None:
    note = {
        "jsonrpc": "2.0",
        "method": "agentstate.set",
        "params": {"user_id": "ann", "object": {"key": "k"}},
    }
    batch = [
        call("store.ping", id_=1),
        call("nope.nope", id_=2),
        note,
        call("agentstate.count", {"user_id": "ann"}, 3),
    ]
    r = await rpc(http, served.rpc_url, batch)
    answers = r.json()
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert answers[0]["result"] == "pong" and answers[1]["error"]["code"] == METHOD_NOT_FOUND
    assert answers[2]["result"] == 1  # the notification ran before the count
    only_notes = await rpc(http, served.rpc_url, [note])
    assert only_notes.status_code == 204
    empty = await rpc(http, served.rpc_url, [])
    assert empty.json()["error"]["code"] == INVALID_REQUEST
    too_many = await rpc(http, served.rpc_url, [call("store.ping", id_=i) for i in range(101)])
    assert too_many.json()["error"]["code"] == INVALID_REQUEST


async def test_oversized_body_is_refused(served: ServedEngine, http: httpx.AsyncClient) -> None:
    huge = call("agentmemory.set", {"user_id": "ann", "object": {"content": "x" * (MAX_BODY_BYTES + 1)}})
    r = await rpc(http, served.rpc_url, huge)
    assert r.status_code == 413 and r.json()["error"]["code"] == INVALID_REQUEST
    count = await rpc(http, served.rpc_url, call("agentmemory.count", {"user_id": "ann"}))
    assert count.json()["result"] == 0


async def test_secret_is_required_when_set(tmp_path: Path, http: httpx.AsyncClient) -> None:
    async with embedded_server(tmp_path / "srv", secret=SECRET) as s:
        no_auth = await rpc(http, s.rpc_url, call("store.ping"))
        assert no_auth.status_code == 401 and no_auth.json()["error"]["code"] == UNAUTHORIZED
        wrong = await rpc(http, s.rpc_url, call("store.ping"), Authorization="Bearer nope")
        assert wrong.status_code == 401 and SECRET not in wrong.text
        basic = await rpc(http, s.rpc_url, call("store.ping"), Authorization=f"Basic {SECRET}")
        assert basic.status_code == 401
        ok = await rpc(http, s.rpc_url, call("store.ping"), Authorization=f"Bearer {SECRET}")
        assert ok.json()["result"] == "pong"
        doc = await http.get(f"http://127.0.0.1:{s.port}/openrpc.json")
        assert doc.status_code == 401


async def test_openrpc_document_lists_every_method(served: ServedEngine, http: httpx.AsyncClient) -> None:
    doc = (await http.get(f"http://127.0.0.1:{served.port}/openrpc.json")).json()
    names = {m["name"] for m in doc["methods"]}
    assert names == set(METHODS)
    for kind in Kind:
        for verb in ("get", "set", "delete", "exist", "list", "count", "restore"):
            assert f"{kind.value.lower()}.{verb}" in names
    assert {"agentlease.claim", "agentlease.release", "store.contexts", "store.dump", "rpc.discover"} <= names
    discovered = (await rpc(http, served.rpc_url, call("rpc.discover"))).json()["result"]
    assert discovered == doc
    assert all(m["paramStructure"] == "by-name" for m in doc["methods"])


def test_endpoint_rule() -> None:
    assert endpoint_for("http://127.0.0.1:9999/hero_osis") == "http://127.0.0.1:9999/hero_osis_ai/rpc"
    assert endpoint_for("http://h:1/hero_osis/") == "http://h:1/hero_osis_ai/rpc"
    assert endpoint_for("https://h/custom/rpc") == "https://h/custom/rpc"
