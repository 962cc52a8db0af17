"""Real OpenAI clients against ``/v1``, each checked for what it got, what was stored and what the
model was sent: LangChain's ChatOpenAI (``with_structured_output``), litellm and the ``llm`` CLI.

Nothing leaves the machine: an audit hook fails any in-process connection beyond loopback, the CLI
runs with a dead loopback proxy for everything but 127.0.0.1, litellm uses its bundled cost map
(``LITELLM_LOCAL_MODEL_COST_MAP``) and ``llm`` a temporary ``LLM_USER_PATH``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, SecretStr

from store import Scope
from tests.channels.web.conftest import Web
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_text

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ALICE = Scope("default", "alice")
_GUARD = {"on": False, "refused": []}  # type: dict[str, Any]


def _loopback_only(event: str, args: tuple[Any, ...]) -> None:
    if not _GUARD["on"] or event != "socket.connect":
        return
    address = args[1]
    host = address[0] if isinstance(address, tuple) else None
    if host is None:
        return  # a Unix socket
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        _GUARD["refused"].append(host)
        raise ConnectionRefusedError(f"test guard: no connection beyond loopback ({host})")


sys.addaudithook(_loopback_only)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm-user"))
    _GUARD["on"], _GUARD["refused"] = True, []
    yield
    _GUARD["on"] = False
    assert _GUARD["refused"] == []


def _calls(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r.get("messages")]


def _sent(body: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(m["role"], m["content"]) for m in body["messages"] if m["role"] != "system"]


async def _stored(web: Web) -> list[list[tuple[str, str]]]:
    out = []
    for conv in (await web.store.conversations.list(ALICE)).items:
        msgs = (await web.store.messages.list(ALICE, conv.sid)).items
        out.append([(m.role, m.content) for m in msgs])
    return out


async def test_langchain_structured_output(web: Web, fake: FakeOpenAI) -> None:
    class City(BaseModel):
        name: str
        country: str

    fake.enqueue(reply_text('{"name": "Paris", "country": "France"}'))
    chat = ChatOpenAI(
        base_url=f"{web.base_url}/v1", api_key=SecretStr("tok-alice"), model="hero-agent", max_retries=0
    )
    city = await chat.with_structured_output(City, method="json_schema").ainvoke("The capital of France?")
    assert city == City(name="Paris", country="France")
    body = _calls(fake)[-1]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["name", "country"]
    assert _sent(body) == [("user", "The capital of France?")]
    assert await _stored(web) == [
        [("user", "The capital of France?"), ("assistant", '{"name": "Paris", "country": "France"}')]
    ]


async def test_litellm_completion_and_stream(web: Web, fake: FakeOpenAI) -> None:
    # imported here, after the fixture set LITELLM_LOCAL_MODEL_COST_MAP: at import litellm would
    # otherwise fetch its model cost map from the network
    import litellm  # noqa: PLC0415

    litellm.telemetry = False
    try:
        await _litellm_turns(web, fake, litellm)
    finally:
        # its cached HTTP clients hold connections (the function is not in litellm's typed exports)
        await litellm.close_litellm_async_clients()  # type: ignore[attr-defined,no-untyped-call]


async def _litellm_turns(web: Web, fake: FakeOpenAI, litellm: Any) -> None:
    resp = await litellm.acompletion(
        model="openai/hero-agent",
        api_base=f"{web.base_url}/v1",
        api_key="tok-alice",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi litellm"}],
        max_tokens=20,
        stop=["STOP"],
    )
    assert resp.choices[0].message.content == "echo: hi litellm"
    assert resp.id.startswith("chatcmpl-")
    body = _calls(fake)[-1]
    assert body["max_tokens"] == 20 and body["stop"] == ["STOP"]
    assert fake.system_text(body).endswith("Be brief.")
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi litellm"},
        {"role": "assistant", "content": "echo: hi litellm"},
        {"role": "user", "content": "and again"},
    ]
    stream = await litellm.acompletion(
        model="openai/hero-agent",
        api_base=f"{web.base_url}/v1",
        api_key="tok-alice",
        messages=history,
        stream=True,
    )
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == "echo: and again"
    # the history matched: one conversation, the client's system text stored once
    assert await _stored(web) == [
        [
            ("user", "hi litellm"),
            ("system", "Be brief."),
            ("assistant", "echo: hi litellm"),
            ("user", "and again"),
            ("assistant", "echo: and again"),
        ]
    ]
    assert _sent(_calls(fake)[-1]) == [
        ("user", "hi litellm"),
        ("assistant", "echo: hi litellm"),
        ("user", "and again"),
    ]


async def _llm(args: list[str], env: dict[str, str]) -> str:
    exe = Path(sys.executable).parent / "llm"
    with anyio.fail_after(60):
        done = await anyio.run_process([str(exe), *args], env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


async def test_the_llm_cli_configured_against_the_endpoint(
    web: Web, fake: FakeOpenAI, tmp_path: Path
) -> None:
    user_path = tmp_path / "llm-user"
    user_path.mkdir()
    (user_path / "extra-openai-models.yaml").write_text(
        f"- model_id: hero\n  model_name: hero-agent\n  api_base: {web.base_url}/v1\n  api_key_name: hero\n"
    )
    (user_path / "keys.json").write_text(json.dumps({"hero": "tok-alice"}))
    env = {
        **os.environ,
        "LLM_USER_PATH": str(user_path),
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    assert await _llm(["-m", "hero", "first question"], env) == "echo: first question"
    # -c continues llm's own conversation: it sends the whole history, which picks ours
    assert await _llm(["-m", "hero", "-c", "second question"], env) == "echo: second question"
    # a fresh call with its own system prompt: a new conversation, the system text used
    assert await _llm(["-m", "hero", "-s", "Answer in French.", "fresh"], env) == "echo: fresh"
    stored = sorted(await _stored(web), key=len)
    assert stored == [
        [("user", "fresh"), ("system", "Answer in French."), ("assistant", "echo: fresh")],
        [
            ("user", "first question"),
            ("assistant", "echo: first question"),
            ("user", "second question"),
            ("assistant", "echo: second question"),
        ],
    ]
    calls = _calls(fake)
    assert _sent(calls[1]) == [
        ("user", "first question"),
        ("assistant", "echo: first question"),
        ("user", "second question"),
    ]
    assert fake.system_text(calls[2]).endswith("Answer in French.")
