"""Voice notes, photos, image documents and albums, end to end: the fake Bot API serves the files
through getFile and its file path, the fake OpenAI server transcribes, speaks and records the image
parts the model got; the real channel, agent and embedded store run in between."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from agent.core import Agent
from channels.telegram.responder import MEDIA_TOTAL, VOICE_REPLIES
from config.settings import Settings
from store import Scope
from tests.channels.telegram.conftest import ALICE, make_settings, running
from tests.channels.telegram.helpers import stored_messages
from tests.fakes.openai_server import FAKE_OGG, FakeOpenAI
from tests.fakes.telegram_server import FakeBotAPI
from tests.media_files import ogg_opus, png, wav
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
HOME = Scope("default", f"tg:{ALICE}")


def media_settings(tmp_path: Path, llm: FakeOpenAI, tg: FakeBotAPI, **telegram: Any) -> Settings:
    """The chat fixture's settings with transcription on (and speech when a test asks)."""
    speech = telegram.pop("speech_model", "")
    base = make_settings(tmp_path, llm, tg, media_group_wait_s=0.3, **telegram)
    llm_settings = dataclasses.replace(base.llm, transcription_model="whisper-1", speech_model=speech)
    return dataclasses.replace(base, llm=llm_settings)


async def settled(tg: FakeBotAPI, agent: Agent, update_id: int) -> None:
    """Wait until the update is marked answered: its whole handling (a voice reply too) is over."""
    key = f"telegram.done.{update_id}"

    async def answered() -> bool:
        return await agent.store.state.get(HOME, key) is not None

    await until(answered, what=f"update {update_id} to be marked answered")


def attachments(raw: str) -> list[dict[str, Any]]:
    return list(json.loads(raw)) if raw else []


def data_url_bytes(url: str) -> bytes:
    head, _, data = url.partition(",")
    assert head.startswith("data:image/") and head.endswith(";base64")
    return base64.b64decode(data)


async def test_voice_note_is_transcribed_and_answered_as_text(
    tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    audio = ogg_opus()
    async with running(media_settings(tmp_path, llm, tg)) as (channel, agent):
        tg.push_update(tg.voice_update(ALICE, ALICE, audio, duration=3))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        assert tg.messages_in(ALICE) == ["echo: hello from a voice note"]
        [heard] = [r for r in llm.audio_requests if r["endpoint"] == "transcriptions"]
        assert heard["data"] == audio and heard["type"] == "audio/ogg"
        assert heard["fields"]["model"] == "whisper-1"
        [download] = tg.downloads
        assert download.startswith(f"/file/bot{tg.token}/") and download.endswith(".oga")
        user, reply = await stored_messages(agent.store, HOME)
        assert (user.content, user.channel) == ("hello from a voice note", "telegram")
        [note] = attachments(user.attachments)
        assert note == {"kind": "voice", "mime": "audio/ogg", "size": len(audio), "duration_s": 3.0}
        assert reply.content == "echo: hello from a voice note"
        assert tg.voices == []  # spoken replies need [llm] speech_model
        counters = agent.metrics.counters
        assert counters.get(MEDIA_TOTAL, kind="voice", outcome="accepted") == 1
        assert "hero_telegram_voice_replies_total" in "\n".join(counters.render_lines())


@pytest.mark.parametrize("voice_replies", [True, False])
async def test_voice_note_is_answered_with_a_voice_note_when_enabled(
    tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI, voice_replies: bool
) -> None:
    settings = media_settings(tmp_path, llm, tg, speech_model="tts-1", voice_replies=voice_replies)
    async with running(settings) as (_channel, agent):
        uid = tg.push_update(tg.voice_update(ALICE, ALICE, ogg_opus()))
        await settled(tg, agent, uid)
        assert tg.messages_in(ALICE) == ["echo: hello from a voice note"]
        spoken = [r for r in llm.audio_requests if r["endpoint"] == "speech"]
        if not voice_replies:
            assert spoken == [] and tg.voices == []
            return
        [voice] = tg.voices
        assert voice["chat_id"] == ALICE and voice["data"] == FAKE_OGG
        [req] = spoken
        assert req["body"]["input"] == "echo: hello from a voice note"
        assert req["body"]["response_format"] == "opus" and req["body"]["model"] == "tts-1"
        assert agent.metrics.counters.get(VOICE_REPLIES, outcome="sent") == 1


async def test_speech_service_down_still_answers_in_text(
    tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    llm.speech_status = 500
    async with running(media_settings(tmp_path, llm, tg, speech_model="tts-1")) as (_channel, agent):
        uid = tg.push_update(tg.voice_update(ALICE, ALICE, ogg_opus()))
        await settled(tg, agent, uid)
        assert tg.messages_in(ALICE) == ["echo: hello from a voice note"]
        assert [r["endpoint"] for r in llm.audio_requests] == ["transcriptions", "speech"]
        assert tg.voices == []
        assert agent.metrics.counters.get(VOICE_REPLIES, outcome="failed") == 1


async def test_a_text_message_gets_no_voice_reply(tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI) -> None:
    async with running(media_settings(tmp_path, llm, tg, speech_model="tts-1")) as (_channel, agent):
        await settled(tg, agent, tg.push_update(tg.text_update(ALICE, ALICE, "typed")))
        assert tg.messages_in(ALICE) == ["echo: typed"]
        assert tg.voices == [] and llm.audio_requests == []


async def test_transcription_service_down_is_one_clear_message_and_nothing_stored(
    tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    llm.audio_status = 503
    async with running(media_settings(tmp_path, llm, tg)) as (channel, agent):
        tg.push_update(tg.voice_update(ALICE, ALICE, ogg_opus()))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        [text] = tg.messages_in(ALICE)
        assert text.startswith("⚠️ The transcription service is unavailable (HTTP 503)")
        assert llm.request_count == 0
        assert await stored_messages(agent.store, HOME) == []
        assert await agent.store.conversations.list(HOME, limit=10) is not None
        assert agent.metrics.counters.get(MEDIA_TOTAL, kind="voice", outcome="refused") == 1


async def test_files_come_from_the_configured_file_base_url(
    tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    cdn = f"http://127.0.0.1:{tg.port}/cdn/file/bot"
    async with running(media_settings(tmp_path, llm, tg, file_base_url=cdn)) as (channel, _agent):
        tg.push_update(tg.voice_update(ALICE, ALICE, ogg_opus()))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        assert tg.messages_in(ALICE) == ["echo: hello from a voice note"]
        [download] = tg.downloads
        assert download.startswith(f"/cdn/file/bot{tg.token}/")


async def test_voice_note_without_a_transcription_model_is_one_clear_message(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    async with running(settings) as (channel, agent):
        tg.push_update(tg.voice_update(ALICE, ALICE, ogg_opus()))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        [text] = tg.messages_in(ALICE)
        assert text.startswith("⚠️ Voice messages are not enabled on this bot")
        assert tg.downloads == [] and llm.audio_requests == [] and llm.request_count == 0
        assert await stored_messages(agent.store, HOME) == []


async def test_voice_note_over_the_caps_is_refused_before_downloading(
    tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    async with running(media_settings(tmp_path, llm, tg)) as (channel, agent):
        tg.push_update(tg.voice_update(ALICE, ALICE, ogg_opus(), duration=601))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        assert tg.messages_in(ALICE) == ["⚠️ The voice message is too long: 601 s, the limit is 600 s."]
        assert tg.downloads == [] and llm.audio_requests == []
        assert await stored_messages(agent.store, HOME) == []


async def test_corrupt_voice_note_is_refused(tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI) -> None:
    async with running(media_settings(tmp_path, llm, tg)) as (channel, agent):
        tg.push_update(tg.voice_update(ALICE, ALICE, wav()))  # a WAV claiming to be audio/ogg
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        assert tg.messages_in(ALICE) == ["⚠️ The file claims to be audio/ogg but is audio/wav."]
        assert llm.audio_requests == [] and await stored_messages(agent.store, HOME) == []


async def test_photo_with_caption_reaches_the_model_as_an_image(
    tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    small, large = png(2, 2), png(40, 30, (10, 200, 10))
    async with running(media_settings(tmp_path, llm, tg)) as (channel, agent):
        tg.push_update(tg.photo_update(ALICE, ALICE, [(small, 2, 2), (large, 40, 30)], caption="what is it?"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        assert tg.messages_in(ALICE) == ["echo: what is it?"]
        [url] = llm.image_urls(llm.requests[0])
        assert data_url_bytes(url) == large  # the largest size Telegram made
        assert len(tg.downloads) == 1
        user, _ = await stored_messages(agent.store, HOME)
        assert user.content == "what is it?"
        [image] = attachments(user.attachments)
        assert (image["kind"], image["width"], image["height"], image["size"]) == (
            "image",
            40,
            30,
            len(large),
        )
        assert agent.metrics.counters.get(MEDIA_TOTAL, kind="photo", outcome="accepted") == 1


async def test_photo_without_caption_and_an_image_document(
    tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    picture = png(8, 6)
    async with running(media_settings(tmp_path, llm, tg)) as (channel, agent):
        tg.push_update(tg.photo_update(ALICE, ALICE, [(picture, 8, 6)]))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        tg.push_update(
            tg.document_update(ALICE, ALICE, png(5, 5), file_name="cat.png", mime_type="image/png")
        )
        await tg.wait_for(lambda: channel.stats["answered"] == 2, timeout=10)
        assert len(llm.image_urls(llm.requests[0])) == 1
        assert data_url_bytes(llm.image_urls(llm.requests[1])[-1]) == png(5, 5)
        stored = await stored_messages(agent.store, HOME)
        assert [m.role for m in stored] == ["user", "assistant", "user", "assistant"]
        assert stored[0].content == "" and attachments(stored[0].attachments)[0]["width"] == 8
        assert attachments(stored[2].attachments)[0]["name"] == "cat.png"


async def test_album_is_one_turn_and_keeps_the_chat_order(
    tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    pictures = [png(3 + i, 3) for i in range(3)]
    async with running(media_settings(tmp_path, llm, tg)) as (channel, agent):
        for i, pic in enumerate(pictures):
            caption = "three of them" if i == 0 else None
            tg.push_update(
                tg.photo_update(ALICE, ALICE, [(pic, 3 + i, 3)], caption=caption, media_group_id="A1")
            )
        tg.push_update(tg.text_update(ALICE, ALICE, "and a text after"))
        await tg.wait_for(lambda: channel.stats["answered"] == 2, timeout=10)
        assert tg.messages_in(ALICE) == ["echo: three of them", "echo: and a text after"]
        assert len(llm.requests) == 2  # one turn for the album, one for the text
        assert [data_url_bytes(u) for u in llm.image_urls(llm.requests[0])] == pictures
        stored = await stored_messages(agent.store, HOME)
        assert [m.content for m in stored] == [
            "three of them",
            "echo: three of them",
            "and a text after",
            "echo: and a text after",
        ]
        assert [a["width"] for a in attachments(stored[0].attachments)] == [3, 4, 5]
        assert agent.metrics.counters.get(MEDIA_TOTAL, kind="media_group", outcome="accepted") == 1


async def test_album_larger_than_the_image_limit_is_refused_whole(
    tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    async with running(media_settings(tmp_path, llm, tg)) as (channel, agent):
        for _ in range(5):  # [agent] max_images_per_message is 4
            tg.push_update(tg.photo_update(ALICE, ALICE, [(png(), 4, 3)], media_group_id="big"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        assert tg.messages_in(ALICE) == ["⚠️ Too many images in one message: 5, the limit is 4."]
        assert tg.downloads == [] and llm.request_count == 0
        assert await stored_messages(agent.store, HOME) == []


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("corrupt", "⚠️ The image could not be read: it is not a valid PNG, JPEG, GIF or WebP file."),
        ("download", "⚠️ Could not download the image from Telegram; please send it again."),
    ],
)
async def test_bad_photo_is_one_clear_message_and_nothing_stored(
    tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI, problem: str, expected: str
) -> None:
    tg.fail_downloads = problem == "download"
    data = b"this is not a picture" if problem == "corrupt" else png()
    async with running(media_settings(tmp_path, llm, tg)) as (channel, agent):
        tg.push_update(tg.photo_update(ALICE, ALICE, [(data, 4, 3)], caption="look"))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        assert tg.messages_in(ALICE) == [expected]
        assert llm.request_count == 0
        assert await stored_messages(agent.store, HOME) == []
        assert agent.metrics.counters.get(MEDIA_TOTAL, kind="photo", outcome="refused") == 1


async def test_photo_too_large_is_refused_from_telegrams_size(
    tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    settings = media_settings(tmp_path, llm, tg)
    settings = dataclasses.replace(
        settings, agent=dataclasses.replace(settings.agent, max_attachment_bytes=100)
    )
    async with running(settings) as (channel, agent):
        tg.push_update(tg.photo_update(ALICE, ALICE, [(png(300, 300), 300, 300)]))
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        [text] = tg.messages_in(ALICE)
        assert text.startswith("⚠️ The image is too large:") and text.endswith("the limit is 100.")
        assert tg.downloads == [] and await stored_messages(agent.store, HOME) == []


async def test_group_album_answered_when_its_caption_mentions_the_bot(
    tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    group = -500
    async with running(media_settings(tmp_path, llm, tg)) as (channel, agent):
        # an album nobody addressed to the bot is ignored, like any group chatter
        for _ in range(2):
            tg.push_update(
                tg.photo_update(group, ALICE, [(png(), 4, 3)], media_group_id="x", chat_type="supergroup")
            )
        # the caption with the mention rides on the second photo here
        tg.push_update(
            tg.photo_update(group, ALICE, [(png(6, 6), 6, 6)], media_group_id="y", chat_type="supergroup")
        )
        tg.push_update(
            tg.photo_update(
                group,
                ALICE,
                [(png(7, 7), 7, 7)],
                caption="@hero_test_bot compare",
                media_group_id="y",
                chat_type="supergroup",
            )
        )
        await tg.wait_for(lambda: channel.stats["answered"] == 1, timeout=10)
        assert tg.messages_in(group) == [f"echo: tg:{ALICE}: compare"]
        assert len(llm.requests) == 1 and len(llm.image_urls(llm.requests[0])) == 2
        stored = await stored_messages(agent.store, Scope("default", f"tg-group:{group}"))
        assert stored[0].sender == f"tg:{ALICE}" and len(attachments(stored[0].attachments)) == 2
