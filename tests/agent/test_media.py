"""Images through the agent core to both providers' wire formats (the Anthropic fake checks image
blocks), image token estimates, the attachment compensation when a turn cannot store its message, and
the sniffing of images and audio (real files made by the tests)."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import anyio
import pytest

from agent.core import Agent
from agent.events import Done, TurnFailed
from agent.media import MediaError, image_info
from agent.media.sniff import audio_type
from agent.prompt.history import estimate_image, estimate_message
from agent.providers.anthropic import AnthropicProvider
from agent.providers.base import ChatMessage, ImagePart
from config.settings import LLMSettings
from store import Kind, NewAttachment, open_store
from tests.agent.conftest import SCOPE, make_settings, req, running
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.media_files import png, wav

pytestmark = pytest.mark.anyio


def image(w: int = 4, h: int = 3) -> NewAttachment:
    return NewAttachment(png(w, h), "image/png", "pic.png", w, h)


async def test_images_reach_anthropic_as_image_blocks(tmp_path: Path) -> None:
    async with FakeAnthropic() as fake:
        s = make_settings(tmp_path / "data", fake.base_url)
        s = dataclasses.replace(
            s,
            llm=LLMSettings(
                provider="anthropic", base_url=fake.base_url, api_key="k", model="claude", max_retries=0
            ),
        )
        provider = AnthropicProvider(s.llm)
        try:
            async with open_store(s) as store, Agent(s, store, provider) as agent:
                with anyio.fail_after(20):
                    events = [e async for e in agent.handle(req("what is it?", images=(image(),)))]
        finally:
            await provider.aclose()
        assert isinstance(events[-1], Done)
        [block] = fake.image_blocks(fake.requests[0])
        assert block["source"] == {
            "type": "base64",
            "media_type": "image/png",
            "data": base64.b64encode(png(4, 3)).decode(),
        }
        user = fake.requests[0]["messages"][-1]["content"]
        assert user[-1] == {"type": "text", "text": "what is it?"}


async def test_an_image_only_message_is_a_turn(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake, running(make_settings(tmp_path / "data", fake.base_url)) as agent:
        with anyio.fail_after(20):
            events = [e async for e in agent.handle(req("", images=(image(),)))]
        assert isinstance(events[-1], Done)
        assert len(fake.image_urls(fake.requests[-1])) == 1


async def test_attachments_are_dropped_when_the_message_is_not_stored(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake, running(make_settings(tmp_path / "data", fake.base_url)) as agent:
        with anyio.fail_after(20):
            events = [e async for e in agent.handle(req("x", images=(image(),), conversation_id="0zzz"))]
        assert isinstance(events[-1], TurnFailed) and events[-1].code == "not_found"
        assert await agent.store.engine.count(Kind.ATTACHMENT, SCOPE) == 0
        assert agent.media.metrics.attachments  # counted when stored, even though dropped after


def test_image_tokens_are_estimated() -> None:
    assert estimate_image(10, 10) == 85
    assert estimate_image(1000, 1000) == 1334
    assert estimate_image(4000, 3000) == 1600
    with_data = ChatMessage("user", "hi", images=(ImagePart("1", "a.png", "image/png", 1000, 1000, b"x"),))
    placeholder = ChatMessage("user", "hi", images=(ImagePart("1", "a.png", "image/png", 1000, 1000),))
    assert (
        estimate_message(with_data)
        > estimate_message(placeholder)
        > estimate_message(ChatMessage("user", "hi"))
    )


def test_sniffing_images_and_audio() -> None:
    assert image_info(png(7, 5), "image/png") == image_info(png(7, 5), "")
    assert (image_info(png(7, 5)).width, image_info(png(7, 5)).height) == (7, 5)
    for bad, declared, code in [
        (png()[:-12], "image/png", "corrupt"),
        (b"GIF", "", "corrupt"),
        (png(), "image/gif", "type_mismatch"),
        (png(), "application/pdf", "unsupported_type"),
    ]:
        with pytest.raises(MediaError) as err:
            image_info(bad, declared)
        assert err.value.code == code
    assert audio_type(wav(), "audio/x-wav") == "audio/wav"
    with pytest.raises(MediaError, match="claims to be audio/ogg but is audio/wav"):
        audio_type(wav(), "audio/ogg")
