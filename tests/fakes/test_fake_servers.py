"""The fakes other tests lean on: run modes, defaults, scripting hooks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI, reply_text
from tests.fakes.sse_scripts import COMPACTION_MARKER, DEFAULT_SUMMARY, MEMORY_MARKER

ROOT = Path(__file__).resolve().parents[2]


def _content(sse_text: str) -> list[str]:
    out = []
    for line in sse_text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                if choice["delta"].get("content"):
                    out.append(choice["delta"]["content"])
    return out


def _chat(system: str, user: str) -> dict[str, object]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return {"model": "m", "stream": True, "messages": messages}


def test_thread_mode_defaults_and_markers() -> None:
    with FakeOpenAI().running_in_thread() as fake:
        url = f"{fake.base_url}/chat/completions"
        echo = httpx.post(url, json=_chat("be nice", "hello there"))
        memory = httpx.post(url, json=_chat(f"{MEMORY_MARKER} extract facts", "I live in Gent"))
        summary = httpx.post(url, json=_chat(f"{COMPACTION_MARKER} summarise", "..."))
        fake.wait_for_requests_blocking(3)
        models = httpx.get(f"{fake.base_url}/models")
    assert "".join(_content(echo.text)) == "echo: hello there"
    assert len(_content(echo.text)) > 1
    assert json.loads("".join(_content(memory.text))) == {"memories": []}
    assert "".join(_content(summary.text)) == DEFAULT_SUMMARY
    assert fake.requests[0]["messages"][-1]["content"] == "hello there"
    assert models.json()["data"][0]["id"] == "fake-model"


@pytest.mark.anyio
async def test_responder_routes_when_the_queue_is_empty() -> None:
    async with FakeOpenAI() as fake:
        fake.responder = lambda body: reply_text(f"model {body['model']}") if body["model"] == "x" else None
        fake.enqueue(reply_text("queued first"))
        async with httpx.AsyncClient() as client:
            url = f"{fake.base_url}/chat/completions"
            texts = [
                (await client.post(url, json={**_chat("", "q"), "model": m, "stream": False})).json()
                for m in ("x", "x", "y")
            ]
        await fake.wait_for_requests(3)
        with pytest.raises(AssertionError, match=r"waiting for 4 requests to the fake \(3 arrived\)"):
            await fake.wait_for_requests(4, timeout=0.05)
    got = [t["choices"][0]["message"]["content"] for t in texts]
    assert got == ["queued first", "model x", "echo: q"]


@pytest.mark.anyio
async def test_anthropic_default_and_markers() -> None:
    async with FakeAnthropic() as fake, httpx.AsyncClient() as client:
        url = f"{fake.base_url}/messages"
        body = {
            "model": "c",
            "max_tokens": 5,
            "system": MEMORY_MARKER,
            "messages": [{"role": "user", "content": "x"}],
        }
        answer = (await client.post(url, json=body)).json()
        assert answer["content"] == [{"type": "text", "text": '{"memories": []}'}]
        body["system"] = [{"type": "text", "text": "plain"}]
        assert (await client.post(url, json=body)).json()["content"][0]["text"] == "echo: x"


def test_standalone_mode_prints_ready_and_streams_n_tokens() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0", "--tokens", "6"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:")
        base_url = line.split()[1]
        reply = httpx.post(f"{base_url}/chat/completions", json=_chat("", "hi"), timeout=5)
        chunks = _content(reply.text)
        assert len(chunks) == 6 and "".join(chunks).startswith("echo: hi")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.anyio
async def test_exchanges_report_the_fakes_own_time_per_exchange() -> None:
    async with FakeOpenAI(chunk_delay=0.02, tokens=5) as fake, httpx.AsyncClient() as client:
        for text in ("first", "second"):
            resp = await client.post(f"{fake.base_url}/chat/completions", json=_chat("s", text))
            assert resp.status_code == 200
        listed = (await client.get(f"{fake.base_url}/_fake/exchanges")).json()
    assert [e["user"] for e in listed] == ["first", "second"]
    # 5 chunks 20 ms apart: the fake's own time covers at least the 4 gaps between them
    assert all(e["ms"] >= 80 for e in listed)
    # one pooled client: both exchanges came over one connection
    assert listed[0]["peer"] == listed[1]["peer"] != ""
    assert listed == fake.exchanges


@pytest.mark.anyio
async def test_a_fake_that_keeps_no_requests_still_answers_and_times_them() -> None:
    """As ``python -m tests.fakes.openai_server`` runs (a bench's fake in its own process): no
    request body is kept, so a 50,000-turn soak does not grow the fake by ~100 KB a turn."""
    async with FakeOpenAI(tokens=3, keep_requests=False) as fake, httpx.AsyncClient() as client:
        for text in ("first", "second"):
            resp = await client.post(f"{fake.base_url}/chat/completions", json=_chat("s", text))
            assert _content(resp.text) and "".join(_content(resp.text)).startswith(f"echo: {text}")
        listed = (await client.get(f"{fake.base_url}/_fake/exchanges")).json()
    assert [e["user"] for e in listed] == ["first", "second"]
    assert fake.requests == [] and fake.headers == [] and fake.peers == []
