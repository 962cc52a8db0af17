"""The OpenAI-compatible endpoint, driven by the official ``openai`` package as a real client."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import anyio
import httpx
import openai
import pytest

from store import Scope
from tests.channels.web.conftest import ALICE, Web
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_error, reply_text
from tests.waiting import until

pytestmark = pytest.mark.anyio

ALICE_SCOPE = Scope("default", "alice")


@pytest.fixture
async def client(web: Web) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{web.base_url}/v1", api_key="tok-alice", max_retries=0) as c:
        yield c


async def _api_conversations(web: Web) -> list[tuple[str, str]]:
    page = await web.store.conversations.list(ALICE_SCOPE)
    return [(c.sid, c.title) for c in page.items]


async def test_models(client: openai.AsyncOpenAI) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == ["hero-agent"]


async def test_non_streaming_completion_is_persisted_with_tag_api(
    client: openai.AsyncOpenAI, web: Web, fake: FakeOpenAI
) -> None:
    resp = await client.chat.completions.create(
        model="hero-agent",
        messages=[
            {"role": "system", "content": "Answer like a pirate."},
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": "earlier answer"},
            {"role": "user", "content": "hello api"},
        ],
    )
    assert resp.choices[0].message.content == "echo: hello api"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    # no stored conversation has this history: a new one, titled from its first message, starting
    # with the history the client sent (so the model sees it) and keeping the client's system text
    ((sid, title),) = await _api_conversations(web)
    assert title == "earlier question"
    msgs = (await web.store.messages.list(ALICE_SCOPE, sid)).items
    assert [(m.role, m.content, m.channel) for m in msgs] == [
        ("user", "earlier question", "api"),
        ("assistant", "earlier answer", "api"),
        ("user", "hello api", "api"),
        ("system", "Answer like a pirate.", "api"),
        ("assistant", "echo: hello api", "api"),
    ]
    assert msgs[3].message_type == "client_system"
    assert resp.id == f"chatcmpl-{msgs[-1].turn_id}" and len(msgs[-1].turn_id) == 32
    sent = fake.requests[-1]["messages"]
    system = fake.system_text(fake.requests[-1])
    # after the agent's own instructions (and memories)
    assert system.endswith("\n\nAnswer like a pirate.") and system != "Answer like a pirate."
    assert [(m["role"], m["content"]) for m in sent if m["role"] != "system"] == [
        ("user", "earlier question"),
        ("assistant", "earlier answer"),
        ("user", "hello api"),
    ]


async def test_streaming_completion(client: openai.AsyncOpenAI, web: Web, fake: FakeOpenAI) -> None:
    # chunks far apart: each goes out as its own delta (chunks waiting together would be joined)
    fake.enqueue(reply_text("echo: stream please", chunks=4, chunk_delay=0.3))
    stream = await client.chat.completions.create(
        model="hero-agent",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finish: list[str] = []
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    assert "".join(pieces) == "echo: stream please"
    assert len(pieces) > 1 and finish == ["stop"]
    assert usage is not None and usage.completion_tokens > 0
    ((sid, _),) = await _api_conversations(web)
    msgs = (await web.store.messages.list(ALICE_SCOPE, sid)).items
    assert [(m.role, m.channel, m.status) for m in msgs] == [
        ("user", "api", "complete"),
        ("assistant", "api", "complete"),
    ]


async def test_history_picks_the_conversation_and_user_is_a_namespace(
    client: openai.AsyncOpenAI, web: Web, fake: FakeOpenAI
) -> None:
    async def ask(messages: list[dict[str, str]], user: str = "") -> str:
        kw = {"user": user} if user else {}
        resp = await client.chat.completions.create(model="x", messages=messages, **kw)  # type: ignore[call-overload]
        return resp.choices[0].message.content or ""

    # `llm chat`-style: each request carries the whole history so far
    one = [{"role": "user", "content": "a1"}]
    one.append({"role": "assistant", "content": await ask(one)})
    one.append({"role": "user", "content": "a2"})
    one.append({"role": "assistant", "content": await ask(one)})
    # line endings and trailing whitespace do not matter
    one.append({"role": "user", "content": "a3"})
    one[1] = {"role": "assistant", "content": one[1]["content"] + "  \r\n"}
    await ask(one)
    # fresh one-shot calls: each its own conversation
    await ask([{"role": "user", "content": "alone 1"}])
    await ask([{"role": "user", "content": "alone 2"}])
    # an edited history (a fork) starts a new conversation with the edited history
    fork = [dict(m) for m in one[:3]]
    fork[2]["content"] = "a2, edited"
    await ask(fork)
    # the same history under another `user` is another namespace
    await ask(one[:3], user="ben")
    titles = sorted(title for _, title in await _api_conversations(web))
    assert titles == ["a1", "a1", "a1", "alone 1", "alone 2"]
    convs = (await web.store.conversations.list(ALICE_SCOPE)).items
    by_count = sorted((c.message_count, c.sid) for c in convs)
    main = by_count[-1][1]
    assert [m.content for m in (await web.store.messages.list(ALICE_SCOPE, main)).items] == [
        "a1",
        "echo: a1",
        "a2",
        "echo: a2",
        "a3",
        "echo: a3",
    ]
    # the agent sent its own stored history of the continued conversation, once
    calls = [r for r in fake.requests if r.get("messages")]
    third = [m["content"] for m in calls[2]["messages"] if m["role"] != "system"]
    assert third == ["a1", "echo: a1", "a2", "echo: a2", "a3"]
    forked = [m["content"] for m in calls[5]["messages"] if m["role"] != "system"]
    assert forked == ["a1", "echo: a1  \r\n", "a2, edited"]  # the fork keeps the client's text


async def test_a_history_match_ties_to_the_most_recently_updated(
    client: openai.AsyncOpenAI, web: Web
) -> None:
    first = [{"role": "user", "content": "same"}]
    await client.chat.completions.create(model="x", messages=first)  # type: ignore[arg-type]
    await client.chat.completions.create(model="x", messages=first)  # type: ignore[arg-type]
    older, newer = sorted((await web.store.conversations.list(ALICE_SCOPE)).items, key=lambda c: c.updated_at)
    assert older.tail_digest == newer.tail_digest != ""
    follow = [*first, {"role": "assistant", "content": "echo: same"}, {"role": "user", "content": "next"}]
    resp = await client.chat.completions.with_raw_response.create(model="x", messages=follow)  # type: ignore[arg-type]
    assert resp.headers["x-hero-conversation"] == newer.sid


async def test_conversation_header_and_foreign_ids(web: Web, client: openai.AsyncOpenAI) -> None:
    async with web.client(ALICE) as http:
        made = (await http.post("/api/conversations", json={"title": "chosen"})).json()
        resp = await http.post(
            "/v1/chat/completions",
            json={"model": "x", "messages": [{"role": "user", "content": "into chosen"}]},
            headers={"X-Hero-Conversation": made["id"]},
        )
        assert resp.status_code == 200 and resp.headers["x-hero-conversation"] == made["id"]
    msgs = (await web.store.messages.list(ALICE_SCOPE, made["id"])).items
    assert [m.content for m in msgs] == ["into chosen", "echo: into chosen"]
    async with openai.AsyncOpenAI(base_url=f"{web.base_url}/v1", api_key="tok-bob", max_retries=0) as bob:
        with pytest.raises(openai.NotFoundError) as err:
            await bob.chat.completions.create(
                model="x",
                messages=[{"role": "user", "content": "peek"}],
                extra_headers={"X-Hero-Conversation": made["id"]},
            )
    assert err.value.status_code == 404
    assert (await web.store.records.stats(Scope("default", "bob"))).messages == 0


async def test_errors_in_openai_shape(web: Web, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(
            model="x", messages=[{"role": "assistant", "content": "no user"}]
        )
    assert bad.value.status_code == 400
    body = bad.value.body
    assert (
        isinstance(body, dict)
        and body["code"] == "invalid_messages"
        and body["type"] == "invalid_request_error"
    )
    async with openai.AsyncOpenAI(base_url=f"{web.base_url}/v1", api_key="wrong", max_retries=0) as intruder:
        with pytest.raises(openai.AuthenticationError):
            await intruder.models.list()
    async with httpx.AsyncClient(base_url=web.base_url, headers=ALICE) as http:
        resp = await http.post(
            "/v1/chat/completions", content=b"{oops", headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 400
        assert resp.json()["error"]["type"] == "invalid_request_error"
        assert set(resp.json()["error"]) == {"code", "message", "type", "param"}
    assert (await web.store.records.stats(ALICE_SCOPE)).messages == 0


async def test_non_streaming_client_disconnect_cancels_the_turn(web: Web, fake: FakeOpenAI) -> None:
    fake.enqueue(reply_text(" ".join(f"w{i}" for i in range(30)), chunks=30, chunk_delay=0.2))
    body = {"model": "x", "messages": [{"role": "user", "content": "slow, not streamed"}]}
    async with (
        httpx.AsyncClient(base_url=web.base_url, headers=ALICE, timeout=30) as http,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(functools.partial(http.post, "/v1/chat/completions", json=body))
        await fake.wait_for_requests(1, timeout=10)
        tg.cancel_scope.cancel()  # the client gives up: its connection closes
    # the turn ends as interrupted long before the 6 s reply could have finished
    metrics = web.agent.metrics
    await until(
        lambda: any(dict(labels).get("outcome") == "interrupted" for labels in metrics.turns),
        interval=0.02,
        what="an interrupted turn in the metrics",
    )
    (conv,) = (await web.store.conversations.list(ALICE_SCOPE)).items
    msgs = (await web.store.messages.list(ALICE_SCOPE, conv.sid)).items
    assert (msgs[0].role, msgs[0].content, msgs[0].channel) == ("user", "slow, not streamed", "api")
    # a partial reply, if any text had arrived, is stored marked; never a complete one
    assert [m.status for m in msgs[1:]] in ([], ["interrupted"])
    assert web.channel.state is not None and len(web.channel.state.locks) == 0


async def test_provider_failure_is_a_502_in_openai_shape(
    client: openai.AsyncOpenAI, web: Web, fake: FakeOpenAI
) -> None:
    fake.enqueue(reply_error(500))
    with pytest.raises(openai.APIStatusError) as err:
        await client.chat.completions.create(model="x", messages=[{"role": "user", "content": "boom"}])
    assert err.value.status_code == 502
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "provider_error"
    (conv,) = (await web.store.conversations.list(ALICE_SCOPE)).items
    msgs = (await web.store.messages.list(ALICE_SCOPE, conv.sid)).items
    assert msgs[0].content == "boom"  # the user's message was stored before the LLM was called


async def test_the_openai_client_with_an_idempotency_key_gets_one_answer(
    web: Web, client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    ask = functools.partial(
        client.chat.completions.create,
        model="any",
        messages=[{"role": "user", "content": "once only"}],
        extra_headers={"Idempotency-Key": "k-1"},
    )
    first, again = await ask(), await ask()
    assert first.choices[0].message.content == again.choices[0].message.content == "echo: once only"
    assert len([r for r in fake.requests if r.get("messages")]) == 1
