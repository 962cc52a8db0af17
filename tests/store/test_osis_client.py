"""The osis engine (client): start-up check, error mapping, secrets, outages and recovery."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from store.api.store import Store
from store.api.turn import TurnReads
from store.cut_turns import INTERRUPTED_TEXT
from store.engine import CreateStep, GetStep, ListQuery, UpdateStep
from store.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from store.models import Kind, Message, Scope, UsageEntry
from store.osis.client import OsisEngine, redacted
from store.osis.protocol import OPTIONAL_METHODS, OsisAuthError, OsisProtocolError, openrpc_document
from store.sqlite.engine import EmbeddedEngine
from tests.store.osis_fixtures import client_settings, embedded_server, free_port, serve
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
SCOPE = Scope("default", "ann")
SECRET = "hunter2-very-secret"


def _plain_osis(methods: set[str] | None = None) -> httpx.MockTransport:
    """A plain OSIS service at the transport seam: ``set`` answers a bare sid."""
    records: dict[str, dict[str, object]] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        method, params = body["method"], body.get("params", {})
        if method == "rpc.discover":
            doc = openrpc_document()
            if methods is not None:
                doc["methods"] = [m for m in doc["methods"] if m["name"] in methods]
            result: object = doc
        elif method.endswith(".set"):
            sid = f"{len(records) + 1:04d}"
            records[sid] = {
                **params["object"],
                "sid": sid,
                "user_id": params["user_id"],
                "context": request.headers["x-hero-context"],
            }
            result = sid
        elif method.endswith(".get"):
            result = records[params["sid"]]
        else:
            return httpx.Response(
                200, json={"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32601, "message": method}}
            )
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

    return httpx.MockTransport(handle)


async def test_startup_check_names_missing_methods() -> None:
    have = {"rpc.discover", "agentconversation.get", "agentconversation.set"}
    engine = OsisEngine(client_settings("http://osis.test/hero_osis"), transport=_plain_osis(have))
    with pytest.raises(OsisProtocolError) as info:
        await engine.open()
    # only the generated verbs are needed (core mode does the rest): the message names what is missing
    # of those, not the extensions
    assert "generated method(s) of agent_data.oschema" in str(info.value)
    assert "agentmessage.list" in str(info.value) and "store.dump" not in str(info.value)
    assert "agentconversation.get" not in str(info.value)
    assert "http://osis.test/hero_osis_ai/rpc" in str(info.value)
    await engine.aclose()


async def test_a_service_that_is_not_osis_is_named_clearly() -> None:
    html = httpx.MockTransport(lambda request: httpx.Response(404, text="<html>Not Found</html>"))
    engine = OsisEngine(client_settings("http://web.test/site"), transport=html)
    with pytest.raises(OsisProtocolError, match="answered HTTP 404 without JSON-RPC"):
        await engine.open()
    await engine.aclose()


async def test_plain_sid_answer_is_followed_by_a_get() -> None:
    engine = OsisEngine(client_settings("http://osis.test/x/rpc"), transport=_plain_osis())
    async with engine:
        rec = await engine.create(Kind.MEMORY, SCOPE, {"content": "likes tea"})
    assert rec["sid"] == "0001" and rec["content"] == "likes tea" and rec["context"] == "default"


async def test_unreachable_names_the_url_without_credentials() -> None:
    port = free_port()
    url = f"http://admin:{SECRET}@127.0.0.1:{port}/hero_osis?token={SECRET}"
    engine = OsisEngine(client_settings(url, secret=SECRET, retries=1))
    with capture_logs() as logs, pytest.raises(StoreUnavailable) as info:
        await engine.open()
    assert str(info.value) == f"OSIS store unreachable at http://127.0.0.1:{port}/hero_osis_ai/rpc"
    assert SECRET not in repr(info.value)
    assert [e["event"] for e in logs] == ["osis.unreachable"] and SECRET not in repr(logs)
    await engine.aclose()
    assert redacted(f"https://u:{SECRET}@h:8/p?k={SECRET}#f") == "https://h:8/p"


async def test_wrong_secret_is_a_clear_auth_error(tmp_path: Path) -> None:
    async with embedded_server(tmp_path / "srv", secret=SECRET) as served:
        bad = OsisEngine(client_settings(served.base_url, secret="wrong-one"))
        with pytest.raises(OsisAuthError) as info:
            await bad.open()
        assert "store.secret" in str(info.value) and "wrong-one" not in str(info.value)
        await bad.aclose()
        async with OsisEngine(client_settings(served.base_url, secret=SECRET)) as good:
            await good.ping()


async def test_errors_map_to_store_errors(tmp_path: Path) -> None:
    async with (
        embedded_server(tmp_path / "srv") as served,
        OsisEngine(client_settings(served.base_url)) as eng,
    ):
        assert await eng.get(Kind.CONVERSATION, SCOPE, "zz") is None
        assert await eng.update(Kind.CONVERSATION, SCOPE, "zz", {"title": "x"}) is None
        with pytest.raises(NotFound):
            await eng.create(Kind.MESSAGE, SCOPE, {"conversation_id": "zz", "role": "user", "content": "x"})
        with pytest.raises(InvalidInput):
            await eng.restore(Kind.MEMORY, {"sid": "01", "context": "other", "user_id": "ann"})
        store = Store(eng)
        with pytest.raises(NotFound):
            await store.conversations.get(SCOPE, "abc")


class _LoseFirstAnswer(httpx.AsyncBaseTransport):
    """The network seam: the first ``<method>`` call reaches the server, its answer is then lost."""

    def __init__(self, method: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.method = method
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not self.lost and json.loads(request.content).get("method") == self.method:
            await response.aread()
            self.lost += 1
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_lost_create_answer_is_retried_without_doubling(tmp_path: Path) -> None:
    async with embedded_server(tmp_path / "srv") as served:
        lossy = _LoseFirstAnswer("agentmessage.set")
        async with OsisEngine(client_settings(served.base_url), transport=lossy) as eng:
            store = Store(eng)
            conv = await store.conversations.create(SCOPE, "t")
            msg = await store.messages.append(
                SCOPE, Message(conversation_id=conv.sid, role="user", content="once", channel="cli")
            )
            assert lossy.lost == 1 and msg.seq == 1
            assert await eng.count(Kind.MESSAGE, SCOPE) == 1


async def test_outage_then_recovery_loses_and_doubles_nothing(tmp_path: Path) -> None:
    port = free_port()
    scope = Scope("default", "ann")
    acked: list[str] = []
    failed = 0
    async with EmbeddedEngine(tmp_path / "data") as backend:
        async with serve(backend, port=port) as served:
            client = OsisEngine(client_settings(served.base_url, retries=1, timeout_s=2))
            await client.open()
            store = Store(client)
            conv = await store.conversations.create(scope, "outage")
            for i in range(10):
                await store.messages.append(
                    scope,
                    Message(conversation_id=conv.sid, role="user", content=f"before {i}", channel="cli"),
                )
                acked.append(f"before {i}")
        # the server is down: clear errors, nothing sticky
        for i in range(3):
            with pytest.raises(StoreUnavailable, match=f"unreachable at http://127.0.0.1:{port}/"):
                await store.messages.append(
                    scope, Message(conversation_id=conv.sid, role="user", content=f"down {i}", channel="cli")
                )
            failed += 1
        with pytest.raises(StoreUnavailable):
            await store.messages.history(scope, conv.sid)
        async with serve(backend, port=port):
            for i in range(10):
                await store.messages.append(
                    scope, Message(conversation_id=conv.sid, role="user", content=f"after {i}", channel="cli")
                )
                acked.append(f"after {i}")
            history = await store.messages.history(scope, conv.sid, limit=100)
            await client.aclose()
    assert failed == 3
    assert [m.content for m in history] == acked
    assert [m.seq for m in history] == list(range(1, len(acked) + 1))


async def test_two_clients_see_one_store(tmp_path: Path) -> None:
    async with (
        embedded_server(tmp_path / "srv") as served,
        OsisEngine(client_settings(served.base_url)) as a,
        OsisEngine(client_settings(served.base_url)) as b,
    ):
        conv = await Store(a).conversations.create(SCOPE, "shared")
        seen = await Store(b).conversations.list(SCOPE)
        assert [c.sid for c in seen.items] == [conv.sid]
        assert await b.claim(SCOPE, "turn:x", "holder-a", 60_000)
        assert not await a.claim(SCOPE, "turn:x", "holder-b", 60_000)
        await b.release(SCOPE, "turn:x", "holder-a")
        assert await a.claim(SCOPE, "turn:x", "holder-b", 60_000)


async def test_paged_dump_and_list_cursor(tmp_path: Path) -> None:
    async with (
        embedded_server(tmp_path / "srv") as served,
        OsisEngine(client_settings(served.base_url)) as eng,
    ):
        for i in range(4):
            await eng.create(Kind.AUDIT, SCOPE, {"tool": f"t{i}"})
        conv = await eng.create(Kind.CONVERSATION, SCOPE, {"title": "big"})
        with anyio.fail_after(60):
            for i in range(600):
                await eng.create(
                    Kind.MESSAGE, SCOPE, {"conversation_id": conv["sid"], "role": "user", "content": f"m{i}"}
                )
        dumped = [(k, r["sid"]) async for k, r in eng.dump("default")]
        direct = [(k, r["sid"]) async for k, r in served.engine.dump("default")]
        assert dumped == direct and len(dumped) == 1 + 600 + 4
        page = await eng.list(Kind.MESSAGE, SCOPE, ListQuery(order_by="seq", limit=500))
        rest = await eng.list(
            Kind.MESSAGE, SCOPE, ListQuery(order_by="seq", limit=500, cursor=page.next_cursor)
        )
        assert [r["seq"] for r in page.items + rest.items] == list(range(1, 601))


async def test_non_json_values_are_invalid_input(tmp_path: Path) -> None:
    async with (
        embedded_server(tmp_path / "srv") as served,
        OsisEngine(client_settings(served.base_url)) as eng,
    ):
        for bad in ({"tool": {1, 2}}, {"tool": "t", "duration_ms": float("nan")}):
            with pytest.raises(InvalidInput):
                await eng.create(Kind.AUDIT, SCOPE, bad)
        assert await eng.count(Kind.AUDIT, SCOPE) == 0


async def test_restore_batch_goes_in_chunks_per_context(tmp_path: Path) -> None:
    async with EmbeddedEngine(tmp_path / "src", fsync_commits=False) as src:
        for ctx in ("aa", "bb"):
            scope = Scope(ctx, "ann")
            conv = await src.create(Kind.CONVERSATION, scope, {"title": ctx})
            for i in range(700):
                await src.create(
                    Kind.MESSAGE,
                    scope,
                    {"conversation_id": conv["sid"], "role": "user", "content": f"{ctx} {i}"},
                )
        items = [item for ctx in ("aa", "bb") async for item in src.dump(ctx)]
    async with (
        embedded_server(tmp_path / "srv") as served,
        OsisEngine(client_settings(served.base_url)) as eng,
    ):
        assert await eng.restore_batch(items) == len(items) == 1402
        assert await eng.restore_batch(items) == 0
        assert [item async for item in eng.dump("aa")] + [item async for item in eng.dump("bb")] == items


async def test_restart_while_appending_keeps_one_copy_of_each_message(tmp_path: Path) -> None:
    """A writer appends without pause (retrying each message with its own request key after an error)
    while the server is stopped and started again under it.

    The writer runs until the last restart is over, never to a fixed count: a stopping uvicorn acts on
    ``should_exit`` only at the next tick of its main loop (every 100 ms) and answers on open
    keep-alive connections until then, so a writer with 30 messages left could store them all before
    the second stop took effect, and then waiting for its failures waited forever (issue 10: no call
    was hanging, the writer had finished)."""
    port = free_port()
    acked: list[int] = []
    failures = 0
    stop_writing = anyio.Event()
    writer_done = anyio.Event()
    async with EmbeddedEngine(tmp_path / "data", fsync_commits=False) as backend:
        async with serve(backend, port=port) as served:
            client = OsisEngine(client_settings(served.base_url, retries=0, timeout_s=2))
            await client.open()
            store = Store(client)
            conv = await store.conversations.create(SCOPE, "restart")

        async def writer() -> None:
            nonlocal failures
            i = 0
            while not stop_writing.is_set():
                try:
                    await store.messages.append(
                        SCOPE,
                        Message(conversation_id=conv.sid, role="user", content=f"m{i}", channel="cli"),
                        request_key=f"k{i}",
                    )
                except StoreUnavailable:
                    failures += 1
                    await anyio.sleep(0.01)
                    continue
                acked.append(i)
                i += 1
            writer_done.set()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer)
                # the server is already down here: the writer must see errors until it comes back
                await until(lambda: failures >= 3, timeout=60, interval=0.005, what="3 failed writes")
                async with serve(backend, port=port):
                    await until(lambda: len(acked) >= 20, timeout=60, interval=0.005, what="20 writes")
                # stopped again in the middle of the run (the writer is still writing), then started
                # once more
                seen = failures
                await until(
                    lambda: failures >= seen + 3, timeout=60, interval=0.005, what="3 more failed writes"
                )
                async with serve(backend, port=port):
                    target = len(acked) + 20
                    await until(
                        lambda: len(acked) >= target, timeout=60, interval=0.005, what="20 more writes"
                    )
                    stop_writing.set()
                    await writer_done.wait()
                    messages = (await store.messages.list(SCOPE, conv.sid, limit=1000)).items
                    await client.aclose()
    assert failures >= 6 and len(acked) >= 40
    assert acked == list(range(len(acked)))
    assert [m.content for m in messages] == [f"m{i}" for i in acked]
    assert [m.seq for m in messages] == list(range(1, len(acked) + 1))


class _Recording(httpx.AsyncBaseTransport):
    """Real HTTP to the server; records the JSON-RPC methods of every request (a list per POST)."""

    def __init__(self, *, lose_first_batch: bool = False) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.posts: list[list[str]] = []
        self.lose_first_batch = lose_first_batch

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls = body if isinstance(body, list) else [body]
        self.posts.append([c["method"] for c in calls])
        response = await self.inner.handle_async_request(request)
        if self.lose_first_batch and isinstance(body, list):
            self.lose_first_batch = False
            await response.aread()
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_turn_opens_in_two_round_trips_and_closes_in_one(tmp_path: Path) -> None:
    async with embedded_server(tmp_path / "srv") as served:
        recording = _Recording()
        async with OsisEngine(client_settings(served.base_url), transport=recording) as eng:
            store = Store(eng)
            conv = await store.conversations.create(SCOPE, "t")
            await store.memories.add(SCOPE, "the user likes tea")
            recording.posts.clear()
            reads = TurnReads(window_limit=50, recall_text="tea please", recall_limit=5, recent_memories=5)
            async with store.turns.open(SCOPE, conv.sid, "tea please", channel="cli", reads=reads) as opened:
                assert [m.content for m in opened.window] == ["tea please"]
                assert [m.content for m in opened.matching_memories] == ["the user likes tea"]
                opened.usage.append(UsageEntry(model="m", conversation_id=conv.sid))
                opening_posts = list(recording.posts)
            closing_posts = recording.posts[len(opening_posts) :]
    assert opening_posts == [
        ["agentlease.claim"],
        [
            "store.mark_interrupted",
            "agentmessage.set",
            "agentconversation.get",
            "agentmessage.list",
            "agentmemory.list",
            "agentmemory.list",
        ],
    ]
    assert closing_posts == [["agentusageentry.set", "agentlease.release"]]


async def test_a_batch_whose_answer_was_lost_is_repeated_without_doubling(tmp_path: Path) -> None:
    async with embedded_server(tmp_path / "srv") as served:
        recording = _Recording(lose_first_batch=True)
        async with OsisEngine(client_settings(served.base_url), transport=recording) as eng:
            store = Store(eng)
            conv = await store.conversations.create(SCOPE, "t")
            async with store.turns.open(SCOPE, conv.sid, "only once", channel="cli") as opened:
                assert opened.message.seq == 1 and [m.content for m in opened.window] == ["only once"]
            assert sum(1 for p in recording.posts if len(p) > 1) == 2  # sent twice, stored once
            assert await eng.count(Kind.MESSAGE, SCOPE) == 1


async def test_batch_errors_come_back_per_step_in_order(tmp_path: Path) -> None:
    async with (
        embedded_server(tmp_path / "srv") as served,
        OsisEngine(client_settings(served.base_url)) as eng,
    ):
        kept = await eng.create(Kind.STATE, SCOPE, {"key": "k", "value": "v"})
        # missing records: None for get and update, as their single calls answer
        assert await eng.batch(
            SCOPE,
            [
                GetStep(Kind.STATE, "zz99"),
                UpdateStep(Kind.STATE, "zz99", {"value": "x"}),
                GetStep(Kind.STATE, kept["sid"]),
            ],
        ) == [None, None, kept]
        # a failing create raises, in step order; the server still ran the later steps
        with pytest.raises(NotFound):
            await eng.batch(
                SCOPE,
                [
                    CreateStep(Kind.MESSAGE, {"conversation_id": "zz99", "role": "user", "content": "x"}),
                    UpdateStep(Kind.STATE, kept["sid"], {"value": "after"}),
                ],
            )
        assert (await eng.get(Kind.STATE, SCOPE, kept["sid"]) or {}).get("value") == "after"


class _OlderServer(httpx.AsyncBaseTransport):
    """Real HTTP to the server, which then looks like an older one: ``rpc.discover`` lists none of the
    optional methods, and a claim carrying the newer params fails the test."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.methods: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls = body if isinstance(body, list) else [body]
        for call in calls:
            self.methods.append(call["method"])
            assert not {"owner", "replace"} & set(call.get("params") or {}), call
        response = await self.inner.handle_async_request(request)
        if calls[0]["method"] != "rpc.discover":
            return response
        answer = json.loads(await response.aread())
        methods = answer["result"]["methods"]
        answer["result"]["methods"] = [m for m in methods if m["name"] not in OPTIONAL_METHODS]
        return httpx.Response(200, json=answer)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_older_server_without_the_optional_methods(tmp_path: Path) -> None:
    async with embedded_server(tmp_path / "srv") as served:
        older = _OlderServer()
        async with OsisEngine(client_settings(served.base_url), transport=older) as eng:
            store = Store(eng)
            conv = await store.conversations.create(SCOPE, "t")
            await store.messages.append(
                SCOPE, Message(conversation_id=conv.sid, role="user", content="cut off", channel="cli")
            )
            # the cut turn is still marked, by plain reads and creates before the opening batch
            async with store.turns.open(SCOPE, conv.sid, "again", channel="cli") as opened:
                assert [m.content for m in opened.window][-2:] == [INTERRUPTED_TEXT, "again"]
            assert await eng.get_lease(SCOPE, "turn:x") is None
            assert await eng.list_leases("default", "turn:") == []
            # without owners, a holder is never known dead: its lease only lapses
            await eng.claim(SCOPE, f"turn:{conv.sid}", "someone", 600_000)
            with pytest.raises(Conflict):
                async with store.leases.conversation_lock(SCOPE, conv.sid, wait_s=0.05):
                    pytest.fail("taken over without knowing the holder")
    assert not {"store.mark_interrupted", "agentlease.get", "agentlease.list"} & set(older.methods)
