"""Voice and images over the web API, against the real app on uvicorn, the real embedded store and the
fake OpenAI server (chat, transcription and its recording of what it got): ``/api/chat`` with
images, ``/api/voice/chat``, ``GET /api/attachments/{id}``, ``/v1`` image and audio parts through the
openai SDK, limits and bad input, and the media counters in ``/metrics``."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

from config.settings import LLMSettings
from store import Kind, ListQuery, Scope
from tests.channels.web.conftest import ALICE, BOB, Web, chat, parse_sse, serve_web, web_settings
from tests.fakes.openai_server import FakeOpenAI
from tests.media_files import png, wav

pytestmark = pytest.mark.anyio


async def metrics_text(web: Web) -> str:
    async with web.client() as client:
        return (await client.get("/metrics")).text


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def voice_settings(tmp_path: Path, fake: FakeOpenAI, **agent: Any) -> Any:
    s = web_settings(tmp_path, fake.base_url)
    llm: LLMSettings = replace(s.llm, transcription_model="whisper-1")
    return replace(s, llm=llm, agent=replace(s.agent, **agent))


@pytest.fixture
async def vweb(tmp_path: Path, fake: FakeOpenAI) -> Any:
    async with serve_web(voice_settings(tmp_path, fake)) as running:
        yield running


async def test_an_image_reaches_the_model_and_is_shown_from_the_same_origin(
    web: Web, fake: FakeOpenAI
) -> None:
    image = png(6, 4)
    async with web.client(ALICE) as alice:
        events = await chat(
            alice, {"message": "what is this?", "images": [{"data_url": data_url(image), "name": "red.png"}]}
        )
        assert next(e for e, _ in events) == "start" and events[-1][0] == "done"
        body = fake.requests[-1]
        assert fake.image_urls(body) == [data_url(image)]
        conv = events[0][1]["conversation_id"]
        msgs = (await alice.get(f"/api/conversations/{conv}/messages")).json()["items"]
        [att] = msgs[0]["attachments"]
        assert (att["kind"], att["name"], att["width"], att["height"], att["mime"]) == (
            "image",
            "red.png",
            6,
            4,
            "image/png",
        )
        # the link works without the bearer token (an <img> cannot send it), from the same origin
        async with web.client() as anonymous:
            got = await anonymous.get(att["url"])
            assert got.status_code == 200 and got.content == image
            assert (
                got.headers["content-type"] == "image/png"
                and got.headers["x-content-type-options"] == "nosniff"
            )
            assert (await anonymous.get(f"/api/attachments/{att['id']}")).status_code == 401
            tampered = att["url"].replace("?t=", "?t=x")
            assert (await anonymous.get(tampered)).status_code == 404
            # a link with non-ASCII characters is just as wrong (not a server error)
            assert (await anonymous.get(f"/api/attachments/{att['id']}?t=é.é")).status_code == 404
    async with web.client(BOB) as bob:
        assert (await bob.get(f"/api/attachments/{att['id']}")).status_code == 404


async def test_an_image_goes_with_its_turn_and_the_next_two_then_as_a_placeholder(
    web: Web, fake: FakeOpenAI
) -> None:
    async with web.client(ALICE) as alice:
        events = await chat(
            alice, {"message": "see", "images": [{"data_url": data_url(png(3, 2)), "name": "dot.png"}]}
        )
        conv = events[0][1]["conversation_id"]
        for i in range(3):
            await chat(alice, {"message": f"more {i}", "conversation_id": conv})
    sent = [len(fake.image_urls(b)) for b in fake.requests]
    assert sent == [1, 1, 1, 0]
    last_user = next(m for m in fake.requests[-1]["messages"] if m["role"] == "user")
    att_id = (await web.store.engine.list(Kind.ATTACHMENT, web_scope(), _q())).items[0]["sid"]
    assert last_user["content"] == f"see\n[image: dot.png, 3x2, {att_id}]"


def web_scope() -> Scope:
    return Scope("default", "alice")


def _q() -> ListQuery:
    return ListQuery()


@pytest.mark.parametrize(
    ("image", "status", "code"),
    [
        ({"data_url": data_url(b"not an image at all")}, 400, "corrupt"),
        ({"data_url": data_url(png()[:30])}, 400, "corrupt"),
        ({"data_url": data_url(png(), "image/jpeg")}, 400, "type_mismatch"),
        ({"data_url": data_url(png(), "text/plain")}, 400, "unsupported_type"),
        ({"data_url": "data:image/png;base64,@@@"}, 400, "corrupt"),
        ({"data_url": data_url(png() + b"\0" * 3000)}, 413, "too_large"),
    ],
)
async def test_bad_images_get_one_clear_error_and_store_nothing(
    tmp_path: Path, fake: FakeOpenAI, image: dict[str, str], status: int, code: str
) -> None:
    s = web_settings(tmp_path, fake.base_url)
    async with serve_web(replace(s, agent=replace(s.agent, max_attachment_bytes=2000))) as running:
        async with running.client(ALICE) as alice:
            resp = await alice.post("/api/chat", json={"message": "look", "images": [image]})
            assert resp.status_code == status, resp.text
            assert resp.json()["error"]["code"] == code
        assert await running.store.engine.count(Kind.ATTACHMENT, web_scope()) == 0
        assert await running.store.engine.count(Kind.MESSAGE, web_scope()) == 0
        assert fake.requests == []
        metrics = await metrics_text(running)
        assert f'hero_agent_media_refused_total{{channel="web",code="{code}"}} 1' in metrics


async def test_voice_chat_transcribes_then_answers_with_a_transcript_event(
    vweb: Web, fake: FakeOpenAI
) -> None:
    audio = wav(0.3)
    async with vweb.client(ALICE) as alice:
        with anyio.fail_after(20):
            resp = await alice.post("/api/voice/chat", files={"audio": ("note.wav", audio, "audio/wav")})
        assert resp.status_code == 200, resp.text
        events = parse_sse(resp.text)
        names = [e for e, _ in events]
        assert names[:2] == ["start", "transcript"] and names[-1] == "done"
        assert events[1][1] == {"text": "hello from a voice note", "duration_s": 1.5}
        [sent] = fake.audio_requests
        assert sent["data"] == audio and sent["type"] == "audio/wav" and sent["filename"] == "voice.wav"
        assert sent["fields"] == {"model": "whisper-1", "response_format": "verbose_json"}
        assert sent["authorization"] == "Bearer sk-test"
        assert fake.last_user_text(fake.requests[-1]) == "hello from a voice note"
        conv = events[0][1]["conversation_id"]
        [msg, _] = (await alice.get(f"/api/conversations/{conv}/messages")).json()["items"]
        assert msg["content"] == "hello from a voice note"
        assert msg["attachments"] == [
            {"kind": "voice", "mime": "audio/wav", "size": len(audio), "duration_s": 1.5}
        ]
        metrics = await metrics_text(vweb)
        assert 'hero_agent_transcriptions_total{channel="web"} 1' in metrics


async def test_voice_failures_are_one_clear_error_and_store_nothing(vweb: Web, fake: FakeOpenAI) -> None:
    async with vweb.client(ALICE) as alice:
        lying = await alice.post("/api/voice/chat", files={"audio": ("a.ogg", wav(), "audio/ogg")})
        assert lying.status_code == 400 and lying.json()["error"]["code"] == "type_mismatch"
        junk = await alice.post("/api/voice/chat", files={"audio": ("a.wav", b"\x00junk" * 10, "audio/wav")})
        assert junk.status_code == 400 and junk.json()["error"]["code"] == "corrupt"
        missing = await alice.post("/api/voice/chat", files={"other": ("a.wav", wav(), "audio/wav")})
        assert missing.status_code == 400
        assert fake.audio_requests == []
        fake.audio_status = 503
        down = await alice.post("/api/voice/chat", files={"audio": ("a.wav", wav(), "audio/wav")})
        assert down.status_code == 503 and down.json()["error"]["code"] == "transcription_unavailable"
        assert "sk-test" not in down.text
    assert await vweb.store.engine.count(Kind.MESSAGE, web_scope()) == 0
    metrics = await metrics_text(vweb)
    assert (
        'hero_agent_transcription_failures_total{channel="web",code="transcription_unavailable"} 1' in metrics
    )


async def test_voice_is_refused_clearly_when_no_transcription_model_is_set(
    web: Web, fake: FakeOpenAI
) -> None:
    async with web.client(ALICE) as alice:
        resp = await alice.post("/api/voice/chat", files={"audio": ("a.wav", wav(), "audio/wav")})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "voice_disabled"
    assert "transcription_model" in resp.json()["error"]["message"]


async def test_voice_over_the_size_cap_is_413(tmp_path: Path, fake: FakeOpenAI) -> None:
    async with (
        serve_web(voice_settings(tmp_path, fake, max_audio_bytes=1000)) as running,
        running.client(ALICE) as alice,
    ):
        resp = await alice.post("/api/voice/chat", files={"audio": ("a.wav", wav(1.0), "audio/wav")})
    assert resp.status_code == 413 and fake.audio_requests == []


async def test_a_model_refusing_images_gets_a_clear_message_under_vision_auto(
    web: Web, fake: FakeOpenAI
) -> None:
    fake.blind = True
    async with web.client(ALICE) as alice:
        events = await chat(alice, {"message": "see", "images": [{"data_url": data_url(png())}]})
        name, data = events[-1]
        assert name == "error" and data["code"] == "vision_unsupported"
        assert "did not accept the image" in data["message"]
        # from now on the image is a placeholder and new images are refused up front
        conv = events[0][1]["conversation_id"]
        events = await chat(alice, {"message": "and now?", "conversation_id": conv})
        assert events[-1][0] == "done" and fake.image_urls(fake.requests[-1]) == []
        again = await alice.post(
            "/api/chat", json={"message": "x", "images": [{"data_url": data_url(png())}]}
        )
        assert again.status_code == 400 and again.json()["error"]["code"] == "vision_disabled"


async def test_vision_false_refuses_images(tmp_path: Path, fake: FakeOpenAI) -> None:
    s = web_settings(tmp_path, fake.base_url)
    async with (
        serve_web(replace(s, llm=replace(s.llm, vision="false"))) as running,
        running.client(ALICE) as alice,
    ):
        resp = await alice.post("/api/chat", json={"message": "x", "images": [{"data_url": data_url(png())}]})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "vision_disabled"


async def test_v1_image_and_audio_parts_through_the_openai_sdk(vweb: Web, fake: FakeOpenAI) -> None:
    image, audio = png(2, 2), wav(0.2)
    client = openai.AsyncOpenAI(base_url=vweb.base_url + "/v1", api_key="tok-alice", max_retries=0)
    try:
        with anyio.fail_after(20):
            resp = await client.chat.completions.create(
                model="hero-agent",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "describe"},
                            {"type": "image_url", "image_url": {"url": data_url(image)}},
                            {
                                "type": "input_audio",
                                "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"},
                            },
                        ],
                    }
                ],
            )
        assert resp.choices[0].message.content == "echo: describe\nhello from a voice note"
        assert fake.image_urls(fake.requests[-1]) == [data_url(image)]
        assert fake.audio_requests[0]["data"] == audio
        only_image = await client.chat.completions.create(
            model="hero-agent",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image)}}]}
            ],
        )
        assert only_image.choices[0].message.content is not None
        with pytest.raises(openai.BadRequestError, match="unsupported content part"):
            await client.chat.completions.create(
                model="hero-agent",
                messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "x"}}]}],
            )
        with pytest.raises(openai.BadRequestError, match="Refused to fetch"):
            await client.chat.completions.create(
                model="hero-agent",
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}],
                    }
                ],
            )
    finally:
        await client.close()


async def test_openapi_documents_the_media_routes(web: Web) -> None:
    async with web.client() as client:
        doc = (await client.get("/openapi.json")).json()
    assert "multipart/form-data" in doc["paths"]["/api/voice/chat"]["post"]["requestBody"]["content"]
    assert "/api/attachments/{id}" in doc["paths"]
    assert "images" in json.dumps(doc["paths"]["/api/chat"])
    _ = httpx


async def test_media_limits_tell_the_page_its_caps(tmp_path: Path, fake: FakeOpenAI) -> None:
    async with serve_web(voice_settings(tmp_path, fake)) as web, web.client(ALICE) as alice:
        limits = (await alice.get("/api/media")).json()
        assert limits == {
            "images": True,
            "max_image_bytes": 5 * 1024 * 1024,
            "max_images": 4,
            "image_types": ["image/png", "image/jpeg", "image/gif", "image/webp"],
            "voice": True,
            "max_audio_bytes": 20 * 1024 * 1024,
            "max_audio_seconds": 600,
        }
        async with web.client() as anonymous:
            assert (await anonymous.get("/api/media")).status_code == 401
    off = web_settings(tmp_path, fake.base_url)
    off = replace(off, llm=replace(off.llm, vision="false"))
    async with serve_web(off) as web, web.client(ALICE) as alice:
        limits = (await alice.get("/api/media")).json()
        assert (limits["images"], limits["voice"]) == (False, False)
