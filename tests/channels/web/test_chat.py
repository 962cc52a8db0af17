"""``POST /api/chat`` over a real uvicorn: event order, tools, commands, disconnect and shutdown."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from store import Message, Scope
from tests.channels.web.conftest import ALICE, Web, chat, parse_sse, serve_web, web_settings
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import DONE, chunk, reply_error, reply_raw_sse, reply_text, reply_tool_calls, sse
from tests.waiting import until

pytestmark = pytest.mark.anyio

ALICE_SCOPE = Scope("default", "alice")
SLOW = "one two three four five six seven eight nine ten eleven twelve"


async def _messages(web: Web, conversation_id: str) -> list[Message]:
    return (await web.store.messages.list(ALICE_SCOPE, conversation_id)).items


async def _wait_for(web: Web, conversation_id: str, status: str) -> list[Message]:
    """Poll the store until the assistant message of the conversation has ``status``."""

    async def reached() -> list[Message]:
        msgs = await _messages(web, conversation_id)
        return msgs if any(m.role == "assistant" and m.status == status for m in msgs) else []

    return await until(reached, interval=0.02, what=f"an assistant message {status}")


async def test_event_order_and_persistence(alice: httpx.AsyncClient, web: Web) -> None:
    events = await chat(alice, {"message": "hello"})
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done"
    assert set(names[1:-1]) <= {"delta", "usage"} and "delta" in names
    start, done = events[0][1], events[-1][1]
    assert start["context"] == "default" and start["conversation_id"] == done["conversation_id"]
    assert "".join(d["text"] for n, d in events if n == "delta") == "echo: hello" == done["text"]
    assert done["usage"]["model"] == "fake-model" and done["usage"]["completion_tokens"] > 0
    msgs = await _messages(web, done["conversation_id"])
    assert [(m.role, m.content, m.channel, m.status) for m in msgs] == [
        ("user", "hello", "web", "complete"),
        ("assistant", "echo: hello", "web", "complete"),
    ]
    assert msgs[0].sid == start["user_message_id"] and msgs[1].sid == done["message_id"]
    # without conversation_id the next message continues the active conversation
    again = await chat(alice, {"message": "more"})
    assert again[-1][1]["conversation_id"] == done["conversation_id"]


async def test_tool_events(alice: httpx.AsyncClient, fake: FakeOpenAI) -> None:
    fake.enqueue(reply_tool_calls([("call_1", "current_datetime", "{}")]), reply_text("It is now.", chunks=2))
    events = await chat(alice, {"message": "what time is it?"})
    names = [n for n, _ in events]
    assert names[0] == "start" and names[-1] == "done"
    assert (
        names.index("tool_start")
        < names.index("tool_end")
        < max(i for i, n in enumerate(names) if n == "delta")
    )
    tool_start = dict(events)["tool_start"]
    tool_end = dict(events)["tool_end"]
    assert tool_start["name"] == tool_end["name"] == "current_datetime"
    assert tool_start["call_id"] == tool_end["call_id"] == "call_1" and tool_end["ok"] is True
    assert events[-1][1]["text"] == "It is now."
    # the stored tool result keeps the duration the stream showed, so a reloaded page shows it too
    cid = events[0][1]["conversation_id"]
    stored = (await alice.get(f"/api/conversations/{cid}/messages")).json()["items"]
    [result] = [m for m in stored if m["role"] == "tool"]
    assert result["tool_call_id"] == "call_1" and result["duration_ms"] == tool_end["duration_ms"]
    assert all(m["duration_ms"] is None for m in stored if m["role"] != "tool")


async def test_slash_commands(alice: httpx.AsyncClient, web: Web, fake: FakeOpenAI) -> None:
    events = await chat(alice, {"message": "/help"})
    assert [n for n, _ in events] == ["command"]
    assert events[0][1]["command"] == "help" and "/clear" in events[0][1]["text"]

    switched = await chat(alice, {"message": "/context work"})
    assert switched[0][0] == "command" and switched[0][1]["data"]["context"] == "work"

    unknown = await chat(alice, {"message": "/frobnicate"})
    assert unknown[0][0] == "command" and "/help" in unknown[0][1]["text"]
    assert fake.request_count == 0  # commands never reach the LLM


async def test_context_from_body_isolates_turns(alice: httpx.AsyncClient, web: Web) -> None:
    events = await chat(alice, {"message": "in work", "context_name": "work"})
    conv = events[-1][1]["conversation_id"]
    assert events[0][1]["context"] == "work"
    assert len((await web.store.messages.list(Scope("work", "alice"), conv)).items) == 2
    assert (await alice.get(f"/api/conversations/{conv}")).status_code == 404  # not in the default context
    assert (
        await alice.get(f"/api/conversations/{conv}", headers={"X-Hero-Context": "work"})
    ).status_code == 200


async def _stream_until_delta(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> tuple[httpx.Response, Any, str]:
    """Open the stream, read up to the first delta; returns (response, line iterator, conversation id)."""
    resp = await client.send(client.build_request("POST", "/api/chat", json=body), stream=True)
    assert resp.status_code == 200
    lines = resp.aiter_lines()
    conversation_id = ""
    with anyio.fail_after(10):
        async for line in lines:
            if line.startswith("data:") and '"conversation_id"' in line and not conversation_id:
                conversation_id = json.loads(line[5:])["conversation_id"]
            if line == "event: delta":
                break
    return resp, lines, conversation_id


async def test_client_disconnect_cancels_and_stores_interrupted(
    alice: httpx.AsyncClient, web: Web, fake: FakeOpenAI
) -> None:
    fake.enqueue(reply_text(SLOW, chunks=12, chunk_delay=0.3))
    resp, _, conv = await _stream_until_delta(alice, {"message": "tell me slowly"})
    await resp.aclose()  # the client goes away mid-reply
    msgs = await _wait_for(web, conv, "interrupted")
    user, reply = msgs[0], msgs[-1]
    assert (user.role, user.content, user.status) == ("user", "tell me slowly", "complete")
    assert reply.role == "assistant" and reply.status == "interrupted"
    assert len(reply.content) < len(SLOW)
    # the conversation is free again: the next turn runs normally after the interrupted one
    events = await chat(alice, {"message": "again", "conversation_id": conv})
    assert events[-1][0] == "done"
    await until(
        lambda: web.channel.state is None or not web.channel.state.metrics.active_streams,
        interval=0.02,
        what="no active stream",
    )
    metrics = (await alice.get("/metrics")).text
    assert 'hero_turns_total{channel="web",outcome="interrupted"} 1' in metrics


async def test_stop_command_cancels_running_turn(
    alice: httpx.AsyncClient, web: Web, fake: FakeOpenAI
) -> None:
    fake.enqueue(reply_text(SLOW, chunks=12, chunk_delay=0.3))
    resp, lines, conv = await _stream_until_delta(alice, {"message": "long one"})
    stopped = await chat(alice, {"message": "/stop", "conversation_id": conv})
    assert stopped[0][0] == "command" and stopped[0][1]["data"]["stopped"] is True
    rest = parse_sse("\n".join([line async for line in lines]))
    await resp.aclose()
    assert rest[-1][0] == "error" and rest[-1][1]["code"] == "cancelled"
    await _wait_for(web, conv, "interrupted")


async def test_shutdown_deadline_cuts_stream_with_final_event(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.enqueue(reply_text(SLOW, chunks=12, chunk_delay=0.5))
    settings = web_settings(tmp_path, fake.base_url, shutdown_deadline_s=0.3)
    async with serve_web(settings) as web, web.client(ALICE) as client:
        resp, lines, conv = await _stream_until_delta(client, {"message": "never finishes in time"})
        async with anyio.create_task_group() as tg:
            tg.start_soon(web.channel.stop)
            with anyio.fail_after(10):
                rest = parse_sse("\n".join([line async for line in lines]))
        await resp.aclose()
        assert rest[-1][0] == "error" and rest[-1][1]["code"] == "shutdown"
        msgs = await _wait_for(web, conv, "interrupted")
        assert [m.role for m in msgs] == ["user", "assistant"]


async def test_shutdown_lets_short_turns_finish(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.enqueue(reply_text("almost done now", chunks=4, chunk_delay=0.1))
    settings = web_settings(tmp_path, fake.base_url, shutdown_deadline_s=10.0)
    async with serve_web(settings) as web, web.client(ALICE) as client:
        resp, lines, conv = await _stream_until_delta(client, {"message": "quick"})
        async with anyio.create_task_group() as tg:
            tg.start_soon(web.channel.stop)
            with anyio.fail_after(10):
                rest = parse_sse("\n".join([line async for line in lines]))
        await resp.aclose()
        assert rest[-1][0] == "done"
        msgs = await _messages(web, conv)
        assert msgs[-1].status == "complete" and msgs[-1].content == "almost done now"


async def test_new_turns_refused_while_shutting_down(alice: httpx.AsyncClient, web: Web) -> None:
    assert web.channel.state is not None
    web.channel.state.shutdown.set()  # what stop() does first, before uvicorn closes the listener
    refused = await alice.post("/api/chat", json={"message": "late"})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
    assert (await alice.get("/readyz")).status_code == 503
    assert (await web.store.records.stats(ALICE_SCOPE)).messages == 0


async def test_disconnect_as_a_fast_reply_ends_leaves_the_agent_healthy(
    alice: httpx.AsyncClient, web: Web
) -> None:
    """Clients that close right after the first delta of a fast reply race the turn's own end (the
    cancel can arrive after Done). The agent must absorb that: the fixture's teardown closes the agent,
    which raises if a turn task crashed (regression: a log call in agent/core.py ``emit`` passed
    ``event=`` twice to structlog and crashed the turn task, making ``hero-agent serve`` exit 1)."""
    for _ in range(5):
        resp = await alice.send(
            alice.build_request("POST", "/api/chat", json={"message": "fast"}), stream=True
        )
        with anyio.fail_after(10):
            async for line in resp.aiter_lines():
                if line == "event: delta":
                    break
        await resp.aclose()
    events = await chat(alice, {"message": "still fine"})
    assert events[-1][0] == "done"


async def test_provider_failure_ends_the_stream_with_an_error_event(
    alice: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    fake.enqueue(reply_error(500))
    events = await chat(alice, {"message": "boom"})
    assert events[0][0] == "start" and events[-1][0] == "error"
    assert events[-1][1]["code"] == "provider_error" and events[-1][1]["message"]
    metrics = (await alice.get("/metrics")).text
    assert 'hero_turn_errors_total{channel="web",code="provider_error"} 1' in metrics


async def test_an_unreachable_provider_is_named_in_the_logs_not_to_the_user(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = web_settings(tmp_path, f"http://127.0.0.1:{port}/v1")
    with capture_logs() as logs:
        async with serve_web(settings) as web, web.client(ALICE) as alice:
            events = await chat(alice, {"message": "anyone there?"})
    assert events[-1][0] == "error"
    message = events[-1][1]["message"]
    assert message == "connection to the LLM provider failed (ConnectError)"
    assert "127.0.0.1" not in json.dumps(events)
    [failed] = [e for e in logs if e["event"] == "llm.failed"]
    assert failed["detail"] == f"base_url http://127.0.0.1:{port}"


async def test_a_retried_request_with_its_idempotency_key_gets_the_first_answer(
    web: Web, alice: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    key = {"Idempotency-Key": "retry-7f3a"}
    first = await chat(alice, {"message": "count the stars"}, headers=key)
    again = await chat(alice, {"message": "count the stars"}, headers=key)
    done, replayed = first[-1], again[-1]
    assert done[0] == replayed[0] == "done"
    assert replayed[1]["message_id"] == done[1]["message_id"]
    assert replayed[1]["text"] == done[1]["text"] == "echo: count the stars"
    assert len([r for r in fake.requests if r.get("messages")]) == 1
    msgs = (await web.store.messages.list(Scope("default", "alice"), done[1]["conversation_id"])).items
    assert [m.role for m in msgs] == ["user", "assistant"]


@pytest.mark.parametrize("key", ["", "x" * 201, "has space", "caf\u00e9"])
async def test_a_bad_idempotency_key_is_refused_and_nothing_is_stored(
    web: Web, alice: httpx.AsyncClient, fake: FakeOpenAI, key: str
) -> None:
    resp = await alice.post("/api/chat", json={"message": "hi"}, headers=[(b"Idempotency-Key", key.encode())])
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_idempotency_key"
    assert (await web.store.conversations.list(Scope("default", "alice"))).items == []
    assert fake.requests == []


async def test_chunks_read_together_stream_as_one_delta(alice: httpx.AsyncClient, fake: FakeOpenAI) -> None:
    """A model whose chunks arrive together (one TCP write here; a reader that fell behind in real
    life) gives fewer ``delta`` events than chunks, with the same text in the same order."""
    words = [f"word{i} " for i in range(30)]
    burst = "".join(sse(chunk({"content": w})) for w in words)
    fake.enqueue(reply_raw_sse([burst, sse(chunk({}, "stop")), DONE]))
    before = (await alice.get("/metrics")).text
    events = await chat(alice, {"message": "all at once"})
    deltas = [d["text"] for n, d in events if n == "delta"]
    assert 1 <= len(deltas) < len(words)
    assert "".join(deltas) == "".join(words) == events[-1][1]["text"]
    after = (await alice.get("/metrics")).text
    assert _counter(after, "hero_provider_text_events_total") - _counter(
        before, "hero_provider_text_events_total"
    ) == len(words)
    assert _counter(after, "hero_text_deltas_total") - _counter(before, "hero_text_deltas_total") == len(
        deltas
    )


def _counter(metrics: str, name: str) -> int:
    return int(next(line.split()[-1] for line in metrics.splitlines() if line.startswith(f"{name} ")))
