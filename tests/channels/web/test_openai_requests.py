"""The OpenAI endpoint as clients expect it: unique completion ids, safe retries (Idempotency-Key, the
SDKs' own retries), generation parameters reaching the provider, and ``GET /v1/models/{id}``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import openai
import pytest
from openai.types.shared_params import ResponseFormatJSONSchema

from agent.providers.anthropic import AnthropicProvider, build_body
from agent.providers.base import ChatMessage, ChatRequest, Sampling, ToolSpec
from config.settings import LLMSettings
from store import Message, Scope
from tests.channels.web.conftest import ALICE, Web
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_error

pytestmark = pytest.mark.anyio

ALICE_SCOPE = Scope("default", "alice")
ID = re.compile(r"^chatcmpl-[0-9a-f]{32}$")


@pytest.fixture
async def client(web: Web) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{web.base_url}/v1", api_key="tok-alice", max_retries=0) as c:
        yield c


async def _only_conversation(web: Web) -> list[Message]:
    (conv,) = (await web.store.conversations.list(ALICE_SCOPE)).items
    return (await web.store.messages.list(ALICE_SCOPE, conv.sid)).items


def _model_calls(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r.get("messages")]


async def test_completion_ids_are_unique_and_name_the_turn(client: openai.AsyncOpenAI, web: Web) -> None:
    ids = []
    for text in ("one", "two", "three"):
        resp = await client.chat.completions.create(model="x", messages=[{"role": "user", "content": text}])
        ids.append(resp.id)
    assert len(set(ids)) == 3 and all(ID.match(i) for i in ids)
    stream = await client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "streamed"}], stream=True
    )
    chunk_ids = {chunk.id async for chunk in stream}
    assert len(chunk_ids) == 1 and ID.match(next(iter(chunk_ids)))
    turn_ids = set()
    for conv in (await web.store.conversations.list(ALICE_SCOPE)).items:
        msgs = (await web.store.messages.list(ALICE_SCOPE, conv.sid)).items
        turn_ids |= {f"chatcmpl-{m.turn_id}" for m in msgs if m.role == "assistant"}
    assert turn_ids == {*ids, *chunk_ids}


async def test_an_idempotent_retry_after_a_failure_re_runs_the_stored_message(
    client: openai.AsyncOpenAI, web: Web, fake: FakeOpenAI
) -> None:
    fake.enqueue(reply_error(500))
    body: dict[str, Any] = {"model": "x", "messages": [{"role": "user", "content": "try me"}]}
    key = {"Idempotency-Key": "k-42"}
    with pytest.raises(openai.APIStatusError) as failed:
        await client.chat.completions.create(**body, extra_headers=key)
    assert failed.value.status_code == 502
    answer = await client.chat.completions.create(**body, extra_headers=key)
    assert answer.choices[0].message.content == "echo: try me"
    msgs = await _only_conversation(web)
    assert [(m.role, m.status, bool(m.superseded_by)) for m in msgs] == [
        ("user", "complete", False),
        ("assistant", "error", True),
        ("assistant", "complete", False),
    ]
    assert answer.id == f"chatcmpl-{msgs[-1].turn_id}" and msgs[1].superseded_by == msgs[-1].turn_id
    # the model got the user's message last, nothing of the failed attempt
    sent = _model_calls(fake)[-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent if m["role"] != "system"] == [("user", "try me")]
    # once completed, the same key answers the stored answer with the same id and no model call
    calls = len(_model_calls(fake))
    again = await client.chat.completions.create(**body, extra_headers=key)
    assert (again.id, again.choices[0].message.content) == (answer.id, "echo: try me")
    assert len(_model_calls(fake)) == calls
    assert len(await _only_conversation(web)) == 3


async def test_the_sdks_own_retry_is_recognised_without_a_key(web: Web, fake: FakeOpenAI) -> None:
    fake.enqueue(reply_error(500))
    seen: list[str] = []

    async def note(request: httpx2.Request) -> None:
        seen.append(request.headers.get("x-stainless-retry-count", ""))

    async with (
        httpx2.AsyncClient(event_hooks={"request": [note]}) as http,  # the SDK's own HTTP library
        openai.AsyncOpenAI(
            base_url=f"{web.base_url}/v1", api_key="tok-alice", max_retries=1, http_client=http
        ) as sdk,
    ):
        resp = await sdk.chat.completions.create(model="x", messages=[{"role": "user", "content": "flaky"}])
    assert seen == ["0", "1"]  # the SDK retried the 502 itself
    assert resp.choices[0].message.content == "echo: flaky"
    msgs = await _only_conversation(web)  # one conversation, one copy of the message
    assert [(m.role, m.content, bool(m.superseded_by)) for m in msgs] == [
        ("user", "flaky", False),
        ("assistant", "", True),
        ("assistant", "echo: flaky", False),
    ]


async def test_the_same_body_without_a_retry_count_is_a_new_request(
    client: openai.AsyncOpenAI, web: Web
) -> None:
    for _ in range(2):
        await client.chat.completions.create(model="x", messages=[{"role": "user", "content": "again"}])
    assert len((await web.store.conversations.list(ALICE_SCOPE)).items) == 2


async def test_generation_parameters_reach_the_provider(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    schema: dict[str, object] = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
    }
    fmt: ResponseFormatJSONSchema = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    await client.chat.completions.create(
        model="x",
        messages=[{"role": "user", "content": "params"}],
        stop=["END"],
        max_tokens=50,
        max_completion_tokens=40,
        temperature=0.3,
        top_p=0.9,
        seed=7,
        response_format=fmt,
    )
    sent = _model_calls(fake)[-1]
    assert sent["stop"] == ["END"] and sent["temperature"] == 0.3 and sent["top_p"] == 0.9
    assert sent["seed"] == 7 and sent["max_tokens"] == 40
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}


@pytest.mark.parametrize(
    ("extra", "code", "param"),
    [
        ({"n": 2}, "unsupported_parameter", "n"),
        ({"temperature": 3}, "invalid_parameter", "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "invalid_parameter", "stop"),
        ({"max_tokens": 0}, "invalid_parameter", "max_tokens"),
        ({"response_format": {"type": "yaml"}}, "invalid_parameter", "response_format"),
        ({"tool_choice": "sometimes"}, "invalid_parameter", "tool_choice"),
    ],
)
async def test_bad_parameters_are_refused_naming_them(
    web: Web, fake: FakeOpenAI, extra: dict[str, Any], code: str, param: str
) -> None:
    async with httpx.AsyncClient(base_url=web.base_url, headers=ALICE) as http:
        resp = await http.post(
            "/v1/chat/completions",
            json={"model": "x", "messages": [{"role": "user", "content": "hi"}], **extra},
        )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == code and resp.json()["error"]["param"] == param
    assert (await web.store.records.stats(ALICE_SCOPE)).messages == 0 and _model_calls(fake) == []


def test_anthropic_gets_the_nearest_equivalents_or_names_the_parameter() -> None:
    provider = AnthropicProvider(LLMSettings(provider="anthropic", base_url="http://127.0.0.1:9", model="m"))
    assert provider.refused_parameter(Sampling(seed=1)) == "seed"
    assert provider.refused_parameter(Sampling(response_format={"type": "json_object"})) == "response_format"
    assert provider.refused_parameter(Sampling(stop=("x",), top_p=0.5, tool_choice="required")) == ""
    tool = ToolSpec("f", "d", {"type": "object"})
    request = ChatRequest(
        model="m",
        system="s",
        messages=(ChatMessage(role="user", content="hi"),),
        tools=(tool,),
        sampling=Sampling(stop=("END",), top_p=0.5, tool_choice="required", parallel_tool_calls=False),
    )
    body = build_body(request)
    assert body["stop_sequences"] == ["END"] and body["top_p"] == 0.5
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


async def test_retrieve_a_model(client: openai.AsyncOpenAI) -> None:
    model = await client.models.retrieve("hero-agent")
    assert (model.id, model.owned_by) == ("hero-agent", "hero-agent")
    with pytest.raises(openai.NotFoundError) as missing:
        await client.models.retrieve("gpt-9")
    assert isinstance(missing.value.body, dict) and missing.value.body["param"] == "model"
