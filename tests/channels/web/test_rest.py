"""The REST API of SPEC 8 against a real uvicorn: every route, auth, scoping and bad input."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from channels.web.media import upload_limit
from store import AuditEntry, Scope
from tests.channels.web.conftest import ALICE, Web, chat, serve_web, web_settings
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.anyio

ALICE_SCOPE = Scope("default", "alice")


async def _create(client: httpx.AsyncClient, title: str, **kw: object) -> dict[str, object]:
    resp = await client.post("/api/conversations", json={"title": title}, **kw)  # type: ignore[arg-type]
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def test_conversation_lifecycle(alice: httpx.AsyncClient) -> None:
    first = await _create(alice, "First")
    second = await _create(alice, "Second")
    listed = (await alice.get("/api/conversations")).json()
    assert [c["id"] for c in listed["items"]] == [second["id"], first["id"]]  # most recent first
    assert listed["active_id"] == second["id"]  # a new conversation becomes the active one

    got = await alice.get(f"/api/conversations/{first['id']}")
    assert got.status_code == 200 and got.json()["title"] == "First"

    patched = await alice.patch(
        f"/api/conversations/{first['id']}",
        json={"title": "Renamed", "tags": ["a", "b"], "is_archived": True},
    )
    assert patched.status_code == 200
    assert patched.json()["title"] == "Renamed" and patched.json()["tags"] == ["a", "b"]
    assert patched.json()["is_archived"] is True

    # archived ones leave the default list, appear with archived=true / all
    default = (await alice.get("/api/conversations")).json()["items"]
    assert [c["id"] for c in default] == [second["id"]]
    only = (await alice.get("/api/conversations", params={"archived": "true"})).json()["items"]
    assert [c["id"] for c in only] == [first["id"]]
    everything = (await alice.get("/api/conversations", params={"archived": "all"})).json()["items"]
    assert {c["id"] for c in everything} == {first["id"], second["id"]}

    deleted = await alice.delete(f"/api/conversations/{first['id']}")
    assert deleted.status_code == 204
    assert (await alice.get(f"/api/conversations/{first['id']}")).status_code == 404


async def test_paging_with_cursor(alice: httpx.AsyncClient) -> None:
    made = [(await _create(alice, f"c{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await alice.get("/api/conversations", params=params)).json()
        assert len(page["items"]) <= 2
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(made))


async def test_messages_clear_and_archived_flag(alice: httpx.AsyncClient, web: Web) -> None:
    conv = await _create(alice, "Chat")
    await chat(alice, {"message": "one", "conversation_id": conv["id"]})
    cleared = await alice.post(f"/api/conversations/{conv['id']}/clear")
    assert cleared.status_code == 200 and cleared.json()["cleared_through_seq"] == 2
    await chat(alice, {"message": "two", "conversation_id": conv["id"]})

    page = (await alice.get(f"/api/conversations/{conv['id']}/messages")).json()
    rows = [(m["role"], m["content"], m["archived"]) for m in page["items"]]
    assert rows == [
        ("user", "one", True),
        ("assistant", "echo: one", True),
        ("user", "two", False),
        ("assistant", "echo: two", False),
    ]
    assert all(m["channel"] == "web" for m in page["items"])
    recent = (
        await alice.get(f"/api/conversations/{conv['id']}/messages", params={"include_archived": "false"})
    ).json()
    assert [m["content"] for m in recent["items"]] == ["two", "echo: two"]
    paged = (await alice.get(f"/api/conversations/{conv['id']}/messages", params={"limit": "3"})).json()
    assert len(paged["items"]) == 3 and paged["next_cursor"]
    rest = await alice.get(
        f"/api/conversations/{conv['id']}/messages", params={"limit": "3", "cursor": paged["next_cursor"]}
    )
    assert [m["seq"] for m in rest.json()["items"]] == [4]


async def test_memories_stats_audit_usage_contexts(alice: httpx.AsyncClient, web: Web) -> None:
    mem, _ = await web.store.memories.add(ALICE_SCOPE, "Alice likes tea")
    await web.store.records.append_audit(
        ALICE_SCOPE, AuditEntry(tool="current_datetime", ok=True, duration_ms=1.5)
    )
    await chat(alice, {"message": "hello"})

    memories = (await alice.get("/api/memories")).json()
    assert [m["content"] for m in memories["items"]] == ["Alice likes tea"]
    assert (await alice.get(f"/api/memories/{mem.sid}")).json()["content"] == "Alice likes tea"

    stats = (await alice.get("/api/stats")).json()
    assert stats["conversations"] == 1 and stats["messages"] == 2 and stats["memories"] == 1
    assert stats["llm_calls"] == 1 and stats["user"] == "alice"

    audit = (await alice.get("/api/audit")).json()
    assert [a["tool"] for a in audit["items"]] == ["current_datetime"]

    usage = (await alice.get("/api/usage")).json()
    assert len(usage["items"]) == 1 and usage["items"][0]["channel"] == "web"
    assert usage["summary"]["by_model"][0]["key"] == "fake-model"
    assert usage["summary"]["by_model"][0]["count"] == 1
    assert len(usage["summary"]["by_day"]) == 1

    assert (await alice.delete(f"/api/memories/{mem.sid}")).status_code == 204
    assert (await alice.get("/api/memories")).json()["items"] == []
    assert (await alice.delete(f"/api/memories/{mem.sid}")).status_code == 404

    await _create(alice, "elsewhere", params={"context_name": "work"})
    contexts = (await alice.get("/api/contexts")).json()
    assert contexts == {"default": "default", "current": "default", "contexts": ["default", "work"]}


async def test_conversation_search(alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    trip = await _create(alice, "Trip to Ghent")
    await _create(alice, "Groceries")
    old = await _create(alice, "Old trip notes")
    await alice.patch(f"/api/conversations/{old['id']}", json={"is_archived": True})
    await _create(bob, "Bob's trip")
    found = (await alice.get("/api/conversations", params={"q": "trip"})).json()
    assert [c["id"] for c in found["items"]] == [trip["id"]] and found["next_cursor"] is None
    every = (await alice.get("/api/conversations", params={"q": "trip", "archived": "all"})).json()
    assert {c["title"] for c in every["items"]} == {"Trip to Ghent", "Old trip notes"}
    assert len((await alice.get("/api/conversations", params={"q": " "})).json()["items"]) == 2
    for bad in ({"q": "x" * 201}, {"q": "tab\there"}, {"q": "trip", "cursor": "abc"}):
        resp = await alice.get("/api/conversations", params=bad)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_parameter", bad


async def test_usage_period_and_day_model_sums(alice: httpx.AsyncClient, web: Web) -> None:
    await chat(alice, {"message": "one"})
    await chat(alice, {"message": "two"})
    usage = (await alice.get("/api/usage")).json()
    assert usage["since"] is None and usage["until"] is None
    [row] = usage["summary"]["by_day_model"]
    assert row["model"] == "fake-model" and row["count"] == 2
    assert row["day"] == time.strftime("%Y-%m-%d", time.gmtime(usage["items"][0]["created_at"] / 1000))
    assert row["avg_ms"] == pytest.approx(row["total_ms"] / 2, abs=1e-3)
    newest = max(u["created_at"] for u in usage["items"])
    later = (await alice.get("/api/usage", params={"since": str(newest + 1)})).json()
    assert later["items"] == [] and later["summary"]["by_day_model"] == [] and later["since"] == newest + 1
    window = (await alice.get("/api/usage", params={"since": "0", "until": str(newest + 1)})).json()
    assert len(window["items"]) == 2 and window["summary"]["by_model"][0]["count"] == 2
    for bad in ({"since": "-1"}, {"until": "soon"}, {"since": "10", "until": "10"}, {"since": "9" * 20}):
        resp = await alice.get("/api/usage", params=bad)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_parameter", bad


async def test_context_selection(alice: httpx.AsyncClient) -> None:
    in_body = await alice.post("/api/conversations", json={"title": "b", "context_name": "ctx-body"})
    in_query = await alice.post(
        "/api/conversations", json={"title": "q"}, params={"context_name": "ctx-query"}
    )
    in_header = await alice.post(
        "/api/conversations", json={"title": "h"}, headers={"X-Hero-Context": "ctx-head"}
    )
    for resp in (in_body, in_query, in_header):
        assert resp.status_code == 201
    for ctx, title in (("ctx-body", "b"), ("ctx-query", "q"), ("ctx-head", "h")):
        items = (await alice.get("/api/conversations", headers={"X-Hero-Context": ctx})).json()["items"]
        assert [c["title"] for c in items] == [title]
    assert (await alice.get("/api/conversations")).json()["items"] == []  # the default context is untouched
    bad = await alice.get("/api/conversations", params={"context_name": "Bad Name!"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_context"


async def test_auth_required_everywhere(web: Web) -> None:
    routes = [
        ("GET", "/api/conversations"),
        ("POST", "/api/conversations"),
        ("GET", "/api/conversations/0001"),
        ("PATCH", "/api/conversations/0001"),
        ("DELETE", "/api/conversations/0001"),
        ("GET", "/api/conversations/0001/messages"),
        ("POST", "/api/conversations/0001/clear"),
        ("POST", "/api/chat"),
        ("GET", "/api/stats"),
        ("GET", "/api/audit"),
        ("GET", "/api/usage"),
        ("GET", "/api/memories"),
        ("GET", "/api/memories/0001"),
        ("DELETE", "/api/memories/0001"),
        ("GET", "/api/contexts"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ]
    async with web.client() as anonymous, web.client({"Authorization": "Bearer wrong"}) as wrong:
        for client in (anonymous, wrong):
            for method, path in routes:
                resp = await client.request(method, path, json={"message": "x"})
                assert resp.status_code == 401, (method, path)
                assert resp.json()["error"]["code"] == "unauthorized"
                assert resp.headers["www-authenticate"] == "Bearer"
    # the public routes stay public
    async with web.client() as anonymous:
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/"):
            assert (await anonymous.get(path)).status_code == 200, path
    assert (await web.store.conversations.list(ALICE_SCOPE)).items == []


async def test_foreign_ids_look_missing(alice: httpx.AsyncClient, bob: httpx.AsyncClient, web: Web) -> None:
    conv = await _create(alice, "Private")
    mem, _ = await web.store.memories.add(ALICE_SCOPE, "secret fact")
    missing_conv = "zzzz9"
    probes = [
        ("GET", "/api/conversations/{}"),
        ("PATCH", "/api/conversations/{}"),
        ("DELETE", "/api/conversations/{}"),
        ("GET", "/api/conversations/{}/messages"),
        ("POST", "/api/conversations/{}/clear"),
    ]
    for method, template in probes:
        body = {"title": "hijack"} if method == "PATCH" else None
        foreign = await bob.request(method, template.format(conv["id"]), json=body)
        missing = await bob.request(method, template.format(missing_conv), json=body)
        other_ctx = await alice.request(
            method, template.format(conv["id"]), json=body, params={"context_name": "other"}
        )
        assert foreign.status_code == missing.status_code == other_ctx.status_code == 404, template
        assert foreign.json() == missing.json() == other_ctx.json()
    foreign_chat = await bob.post("/api/chat", json={"message": "hi", "conversation_id": conv["id"]})
    missing_chat = await bob.post("/api/chat", json={"message": "hi", "conversation_id": missing_conv})
    assert foreign_chat.status_code == missing_chat.status_code == 404
    assert foreign_chat.json() == missing_chat.json()
    for method in ("GET", "DELETE"):
        foreign = await bob.request(method, f"/api/memories/{mem.sid}")
        missing = await bob.request(method, "/api/memories/zzzz9")
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json()
    assert (await bob.get("/api/conversations")).json()["items"] == []
    assert (await bob.get("/api/memories")).json()["items"] == []
    # nothing of alice's changed
    still = (await alice.get(f"/api/conversations/{conv['id']}")).json()
    assert (
        still["title"] == "Private"
        and (await web.store.memories.get(ALICE_SCOPE, mem.sid)).content == "secret fact"
    )
    assert (await web.store.conversations.list(Scope("default", "bob"))).items == []


async def test_bad_input_changes_nothing(alice: httpx.AsyncClient, web: Web) -> None:
    conv = await _create(alice, "Keep")
    cases = [
        ("POST", "/api/conversations", b"{not json", 400, "invalid_json"),
        ("POST", "/api/conversations", b"[1, 2]", 400, "invalid_json"),
        ("POST", "/api/conversations", b'{"title": 5}', 400, "invalid_field"),
        ("POST", "/api/conversations", b'{"title": "x", "surprise": 1}', 400, "invalid_field"),
        ("POST", "/api/conversations", b'{"title": "bell\\u0007"}', 400, "invalid_field"),
        ("PATCH", f"/api/conversations/{conv['id']}", b'{"is_archived": "yes"}', 400, "invalid_field"),
        ("PATCH", f"/api/conversations/{conv['id']}", b'{"tags": "a"}', 400, "invalid_field"),
        ("PATCH", f"/api/conversations/{conv['id']}", b"{}", 400, "missing_field"),
        (
            "PATCH",
            f"/api/conversations/{conv['id']}",
            b'{"title": "' + b"x" * 300 + b'"}',
            400,
            "invalid_field",
        ),
        ("POST", "/api/chat", b'{"message": ""}', 400, "invalid_input"),
        ("POST", "/api/chat", b'{"message": 7}', 400, "invalid_field"),
        ("POST", "/api/chat", b'{"message": "nul \\u0000 inside"}', 400, "invalid_input"),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "a\\u0000"}]}',
            400,
            "invalid_input",
        ),
        ("POST", "/api/chat", b"", 400, "invalid_json"),
        ("POST", "/api/chat", b"\xff\xfe\x00binary", 400, "invalid_json"),
        ("POST", "/api/chat", b'{"message": "hi", "conversation_id": "NOT/AN ID"}', 400, "invalid_input"),
        ("GET", "/api/conversations?limit=0", b"", 400, "invalid_limit"),
        ("GET", "/api/conversations?limit=abc", b"", 400, "invalid_limit"),
        ("GET", "/api/conversations?archived=maybe", b"", 400, "invalid_parameter"),
        ("GET", "/api/conversations/BAD!ID", b"", 400, "invalid_input"),
    ]
    for method, path, body, status, code in cases:
        resp = await alice.request(method, path, content=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == status, (path, body, resp.text)
        assert resp.json()["error"]["code"] == code, (path, body)
        assert isinstance(resp.json()["error"]["message"], str)
    page = await web.store.conversations.list(ALICE_SCOPE, archived=None)
    assert [(c.title, c.message_count, c.is_archived, c.tags) for c in page.items] == [("Keep", 0, False, ())]


async def test_oversized_bodies_are_refused(web: Web, alice: httpx.AsyncClient) -> None:
    limit = web.settings.web.max_body_bytes
    # a chat body may carry base64 images: its cap is [web] max_body_bytes plus room for them
    chat_cap = upload_limit(web.agent.media, limit)
    huge = b'{"message": "' + b"a" * (chat_cap + 10) + b'"}'
    resp = await alice.post("/api/chat", content=huge, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "body_too_large"

    # chunked upload without Content-Length: the cap still holds while reading
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b"a" * 65536

    streamed = await alice.post(
        "/api/conversations", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413

    too_long = "b" * (web.settings.agent.max_message_chars + 1)
    resp = await alice.post("/api/chat", json={"message": too_long})
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "message_too_large"
    assert (await web.store.conversations.list(ALICE_SCOPE, archived=None)).items == []
    assert (await web.store.records.stats(ALICE_SCOPE)).messages == 0


async def test_unknown_routes_and_methods(alice: httpx.AsyncClient) -> None:
    missing = await alice.get("/api/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = await alice.put("/api/conversations")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


async def test_cors_is_off_by_default(alice: httpx.AsyncClient) -> None:
    resp = await alice.get("/api/conversations", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in resp.headers
    preflight = await alice.options(
        "/api/chat", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


async def test_page_and_static_files(web: Web) -> None:
    async with web.client() as anonymous:
        page = await anonymous.get("/")
        assert page.status_code == 200 and "<title>hero-agent</title>" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        modules = ["app.js", "api.js", "chat.js", "messages.js", "markdown.js", "sidebar.js", "panels.js"]
        modules += ["usage.js", "vendor/markdown-it.min.js", "vendor/purify.es.js", "vendor/highlight.min.js"]
        for name in modules:  # module scripts load only with a JavaScript type
            resp = await anonymous.get(f"/static/{name}")
            assert resp.status_code == 200 and "javascript" in resp.headers["content-type"], name
        for name in ("markdown-it", "dompurify", "highlight.js"):
            assert (await anonymous.get(f"/static/vendor/LICENSE-{name}.txt")).status_code == 200
        icon = await anonymous.get("/static/favicon.svg")
        assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
        assert (await anonymous.get("/static/style.css")).status_code == 200
        assert (await anonymous.get("/static/../app.py")).status_code == 404


async def test_local_user_without_tokens(tmp_path: Path, fake: FakeOpenAI) -> None:
    async with serve_web(web_settings(tmp_path, fake.base_url, tokens=(), local_user="me")) as running:
        async with running.client() as anonymous:
            made = await anonymous.post("/api/conversations", json={"title": "mine"})
            assert made.status_code == 201
            stats = (await anonymous.get("/api/stats")).json()
            assert stats["user"] == "me" and stats["conversations"] == 1
        assert (await running.store.conversations.list(Scope("default", "me"))).items[0].title == "mine"


async def test_trusted_proxy_header(tmp_path: Path, fake: FakeOpenAI) -> None:
    settings = web_settings(tmp_path, fake.base_url, trusted_user_header="X-Remote-User")
    async with serve_web(settings) as running, running.client() as client:
        via_proxy = await client.get("/api/stats", headers={"X-Remote-User": "carol"})
        assert via_proxy.status_code == 200 and via_proxy.json()["user"] == "carol"
        assert (await client.get("/api/stats")).status_code == 401  # no header, no token
        assert (await client.get("/api/stats", headers=ALICE)).json()["user"] == "alice"
