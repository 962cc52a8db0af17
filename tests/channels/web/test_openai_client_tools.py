"""Client tools on ``/v1``: the request's ``tools`` reach the model beside the agent's own; a call to one
ends the completion with ``tool_calls`` (streamed and not) and is stored as awaiting the client; the
client's ``role: tool`` results continue that turn. Checked with the openai SDK and LangChain's
``bind_tools``, each for what the client got, what was stored and what the model was sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, SecretStr

from store import CLIENT_NO_RESULT, Message, Scope
from tests.channels.web.conftest import Web
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_text, reply_tool_calls

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SCOPE = Scope("default", "alice")
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
QUESTION = "What is the weather in Paris?"


@pytest.fixture
async def client(web: Web) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{web.base_url}/v1", api_key="tok-alice", max_retries=0) as c:
        yield c


def _model_calls(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r.get("messages")]


def _sent(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """What the model was sent after its system text: (role, content or call ids or result)."""
    out: list[tuple[str, Any]] = []
    for m in body["messages"]:
        if m["role"] == "system":
            continue
        if m.get("tool_calls"):
            out.append(("assistant", [c["function"]["name"] for c in m["tool_calls"]]))
        elif m["role"] == "tool":
            out.append(("tool", (m["tool_call_id"], m["content"])))
        else:
            out.append((m["role"], m["content"]))
    return out


async def _stored(web: Web) -> list[Message]:
    convs = (await web.store.conversations.list(SCOPE)).items
    assert len(convs) == 1
    return list((await web.store.messages.list(SCOPE, convs[0].sid)).items)


def _shown(messages: list[Message]) -> list[tuple[str, str]]:
    return [(m.role, m.content if not m.tool_calls else m.tool_calls) for m in messages]


def _calls_json(*calls: tuple[str, str, str, bool]) -> str:
    return json.dumps(
        [
            {"id": i, "name": n, "arguments": a, **({"client": True} if client else {})}
            for i, n, a, client in calls
        ]
    )


async def _metric(web: Web, kind: str) -> str:
    async with web.client() as anon:
        text = (await anon.get("/metrics")).text
    line = f'hero_client_tool_calls_total{{channel="api",kind="{kind}"}} '
    return next((row.removeprefix(line) for row in text.splitlines() if row.startswith(line)), "absent")


async def test_sdk_gets_the_call_sends_the_result_and_gets_the_answer(
    client: openai.AsyncOpenAI, web: Web, fake: FakeOpenAI
) -> None:
    fake.enqueue(
        reply_tool_calls([("call_w", "get_weather", '{"city": "Paris"}')]),
        reply_text("Sunny in Paris, 21 C."),
    )
    first = await client.chat.completions.create(
        model="hero-agent",
        messages=[{"role": "user", "content": QUESTION}],
        tools=[WEATHER],
        tool_choice="auto",
        parallel_tool_calls=False,
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = [c for c in choice.message.tool_calls or [] if c.type == "function"]
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_w", "get_weather", '{"city": "Paris"}')
    ]
    sent = _model_calls(fake)[0]
    names = [t["function"]["name"] for t in sent["tools"]]
    assert "get_weather" in names and "current_datetime" in names
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False
    # stored as awaiting the client: the step with its call marked, no result, no interrupted marker
    stored = await _stored(web)
    assert _shown(stored) == [
        ("user", QUESTION),
        ("assistant", _calls_json(("call_w", "get_weather", '{"city": "Paris"}', True))),
    ]
    assert await _metric(web, "returned") == "1"

    final = await client.chat.completions.create(
        model="hero-agent",
        messages=[
            {"role": "user", "content": QUESTION},
            cast(Any, choice.message.model_dump(exclude_none=True)),
            {"role": "tool", "tool_call_id": "call_w", "content": "sunny, 21 C"},
        ],
        tools=[WEATHER],
    )
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == "Sunny in Paris, 21 C."
    assert _sent(_model_calls(fake)[1]) == [
        ("user", QUESTION),
        ("assistant", ["get_weather"]),
        ("tool", ("call_w", "sunny, 21 C")),
    ]
    stored = await _stored(web)
    assert _shown(stored)[2:] == [("tool", "sunny, 21 C"), ("assistant", "Sunny in Paris, 21 C.")]
    assert stored[2].tool_call_id == "call_w" and stored[2].status == "complete"
    assert await _metric(web, "result") == "1"
    # the conversation goes on: the client's history (tool traffic left out) matches it
    again = await client.chat.completions.create(
        model="hero-agent",
        messages=[
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "Sunny in Paris, 21 C."},
            {"role": "user", "content": "thanks"},
        ],
    )
    assert again.choices[0].message.content == "echo: thanks"
    assert len(await _stored(web)) == 6


async def test_sdk_streamed_call_and_result(client: openai.AsyncOpenAI, web: Web, fake: FakeOpenAI) -> None:
    fake.enqueue(
        reply_tool_calls([("call_s", "get_weather", '{"city": "Oslo"}')], text="Let me check."),
        reply_text("Snow in Oslo.", chunks=3),
    )
    stream = await client.chat.completions.create(
        model="hero-agent",
        messages=[{"role": "user", "content": "Oslo?"}],
        tools=[WEATHER],
        stream=True,
    )
    text, calls, finish = "", [], None  # type: str, list[Any], str | None
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            calls += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and text == "Let me check."
    assert [(c.index, c.id, c.function.name, c.function.arguments) for c in calls] == [
        (0, "call_s", "get_weather", '{"city": "Oslo"}')
    ]
    assert _shown(await _stored(web)) == [
        ("user", "Oslo?"),
        ("assistant", _calls_json(("call_s", "get_weather", '{"city": "Oslo"}', True))),
    ]
    call: Any = {"name": "get_weather", "arguments": "{}"}
    steps: Any = [{"id": "call_s", "type": "function", "function": call}]
    stream = await client.chat.completions.create(
        model="hero-agent",
        messages=[
            {"role": "user", "content": "Oslo?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": steps,
            },
            {"role": "tool", "tool_call_id": "call_s", "content": "snow"},
        ],
        tools=[WEATHER],
        stream=True,
    )
    answer = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert answer == "Snow in Oslo."
    assert _sent(_model_calls(fake)[1])[1:] == [("assistant", ["get_weather"]), ("tool", ("call_s", "snow"))]
    assert _shown(await _stored(web))[2:] == [("tool", "snow"), ("assistant", "Snow in Oslo.")]
    # the next message, its history holding the tool-call step with its text: the same conversation
    history: list[Any] = [
        {"role": "user", "content": "Oslo?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": steps},
        {"role": "tool", "tool_call_id": "call_s", "content": "snow"},
        {"role": "assistant", "content": "Snow in Oslo."},
        {"role": "user", "content": "and tomorrow?"},
    ]
    more = await client.chat.completions.create(model="hero-agent", messages=history)
    assert more.choices[0].message.content == "echo: and tomorrow?"
    assert len(await _stored(web)) == 6


async def test_langchain_bind_tools(web: Web, fake: FakeOpenAI) -> None:
    class GetWeather(BaseModel):
        """The weather of a city."""

        city: str

    fake.enqueue(
        reply_tool_calls([("call_l", "GetWeather", '{"city": "Rome"}')]), reply_text("Warm in Rome.")
    )
    chat = ChatOpenAI(
        base_url=f"{web.base_url}/v1", api_key=SecretStr("tok-alice"), model="hero-agent", max_retries=0
    )
    bound = chat.bind_tools([GetWeather])
    asked = HumanMessage("Weather in Rome?")
    call = await bound.ainvoke([asked])
    assert call.tool_calls == [
        {"name": "GetWeather", "args": {"city": "Rome"}, "id": "call_l", "type": "tool_call"}
    ]
    assert "GetWeather" in [t["function"]["name"] for t in _model_calls(fake)[0]["tools"]]
    final = await bound.ainvoke([asked, call, ToolMessage("warm, 28 C", tool_call_id="call_l")])
    assert final.content == "Warm in Rome."
    assert _sent(_model_calls(fake)[1]) == [
        ("user", "Weather in Rome?"),
        ("assistant", ["GetWeather"]),
        ("tool", ("call_l", "warm, 28 C")),
    ]
    assert _shown(await _stored(web))[2:] == [("tool", "warm, 28 C"), ("assistant", "Warm in Rome.")]


async def test_a_mixed_step_runs_the_agent_tool_and_returns_only_the_client_call(
    alice: httpx.AsyncClient, web: Web, fake: FakeOpenAI
) -> None:
    fake.enqueue(
        reply_tool_calls(
            [
                ("call_t", "current_datetime", '{"timezone": "UTC"}'),
                ("call_w", "get_weather", '{"city": "Paris"}'),
            ]
        ),
        reply_text("Morning sun in Paris."),
    )
    body: dict[str, Any] = {"messages": [{"role": "user", "content": QUESTION}], "tools": [WEATHER]}
    got = (await alice.post("/v1/chat/completions", json=body)).json()
    assert got["choices"][0]["finish_reason"] == "tool_calls"
    assert [c["id"] for c in got["choices"][0]["message"]["tool_calls"]] == ["call_w"]
    stored = await _stored(web)
    assert [(m.role, m.tool_call_id) for m in stored] == [("user", ""), ("assistant", ""), ("tool", "call_t")]
    assert stored[2].name == "current_datetime" and stored[2].status == "complete"
    assert len(_model_calls(fake)) == 1  # the client call ended the turn: no second model call yet
    body["messages"] += [
        got["choices"][0]["message"],
        {"role": "tool", "tool_call_id": "call_w", "content": "sunny"},
    ]
    key = {"Idempotency-Key": "continue-1"}
    done = (await alice.post("/v1/chat/completions", json=body, headers=key)).json()
    assert done["choices"][0]["message"]["content"] == "Morning sun in Paris."
    # sent again (a retry after a lost response): the same answer and id, nothing stored or called
    again = (await alice.post("/v1/chat/completions", json=body, headers=key)).json()
    assert again["choices"][0]["message"]["content"] == "Morning sun in Paris."
    assert again["id"] == done["id"]
    sent = _sent(_model_calls(fake)[1])
    assert sent[:2] == [("user", QUESTION), ("assistant", ["current_datetime", "get_weather"])]
    assert [s[1][0] for s in sent[2:]] == ["call_t", "call_w"] and sent[3][1][1] == "sunny"
    assert [(m.role, m.tool_call_id) for m in await _stored(web)][3:] == [
        ("tool", "call_w"),
        ("assistant", ""),
    ]
    assert len(_model_calls(fake)) == 2


async def test_a_user_message_before_the_results_answers_the_awaited_call(
    alice: httpx.AsyncClient, web: Web, fake: FakeOpenAI
) -> None:
    fake.enqueue(reply_tool_calls([("call_w", "get_weather", '{"city": "Paris"}')]))
    body: dict[str, Any] = {"messages": [{"role": "user", "content": QUESTION}], "tools": [WEATHER]}
    got = (await alice.post("/v1/chat/completions", json=body)).json()
    assert got["choices"][0]["finish_reason"] == "tool_calls"
    body["messages"] += [got["choices"][0]["message"], {"role": "user", "content": "never mind"}]
    resp = await alice.post("/v1/chat/completions", json=body)
    assert resp.json()["choices"][0]["message"]["content"] == "echo: never mind"
    stored = await _stored(web)
    assert [(m.role, m.content, m.status) for m in stored][2:] == [
        ("tool", CLIENT_NO_RESULT, "error"),
        ("user", "never mind", "complete"),
        ("assistant", "echo: never mind", "complete"),
    ]
    assert _sent(_model_calls(fake)[1]) == [
        ("user", QUESTION),
        ("assistant", ["get_weather"]),
        ("tool", ("call_w", CLIENT_NO_RESULT)),
        ("user", "never mind"),
    ]
    # the results coming late continue nothing: refused, nothing stored
    late = [*body["messages"][:2], {"role": "tool", "tool_call_id": "call_w", "content": "sunny"}]
    refused = await alice.post("/v1/chat/completions", json={**body, "messages": late})
    assert refused.status_code == 409
    # naming the conversation, the agent finds nothing awaiting there either
    conv = resp.headers["x-hero-conversation"]
    named = await alice.post(
        "/v1/chat/completions", json={**body, "messages": late}, headers={"X-Hero-Conversation": conv}
    )
    assert named.status_code == 409 and named.json()["error"]["code"] == "conflict"
    assert len(await _stored(web)) == 5
    assert len(_model_calls(fake)) == 2


async def test_a_client_tool_named_like_an_agent_tool_is_refused(
    alice: httpx.AsyncClient, web: Web, fake: FakeOpenAI
) -> None:
    clash = {**WEATHER, "function": {**WEATHER["function"], "name": "current_datetime"}}
    resp = await alice.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "tools": [clash]}
    )
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "tool_name_conflict" and err["param"] == "tools"
    assert "'current_datetime'" in err["message"]
    assert (await web.store.conversations.list(SCOPE)).items == [] and _model_calls(fake) == []
