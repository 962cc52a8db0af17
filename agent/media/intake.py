"""Media coming in from a channel: checked, measured, transcribed, ready for a turn.

:class:`MediaIntake` is the one place where the limits of ``[agent]`` (``max_attachment_bytes``,
``max_images_per_message``, ``max_audio_bytes``, ``max_audio_seconds``) and ``[llm] vision`` are
applied, for every channel: Telegram voice notes and photos, the web page's uploads and microphone,
``/api/voice/chat`` and the ``/v1`` content parts. Every refusal is one
:class:`~agent.media.errors.MediaError` and is counted; nothing is stored before the turn stores it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from dataclasses import dataclass

import anyio
import structlog

from agent.media.audio import AudioService
from agent.media.errors import MediaError
from agent.media.metrics import MediaMetrics
from agent.media.sniff import audio_type, image_info
from agent.tools.base import ToolError
from agent.tools.http_fetch import HttpFetchTool
from agent.tools.net_policy import AddressRefused
from config.settings import Settings
from store import NewAttachment

log = structlog.get_logger()

_DATA_URL_RE = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*?)(;base64)?,(.*)$", re.S | re.I)


@dataclass(frozen=True, slots=True)
class VoiceNote:
    """What is kept of a voice message after transcription: its type, size and duration (not the
    audio itself)."""

    mime: str
    size: int
    duration_s: float

    def descriptor(self) -> dict[str, object]:
        return {
            "kind": "voice",
            "mime": self.mime,
            "size": self.size,
            "duration_s": round(self.duration_s, 2),
        }


@dataclass(frozen=True, slots=True)
class SpokenInput:
    text: str
    voice: VoiceNote


class MediaIntake:
    def __init__(self, settings: Settings, audio: AudioService, fetcher: HttpFetchTool | None = None) -> None:
        self.settings = settings
        self.audio = audio
        self.metrics = MediaMetrics()
        a = settings.agent
        # image URLs are fetched like http_fetch fetches pages (same address policy, redirects,
        # timeout), only with the attachment cap as the byte limit (one byte more to notice "larger")
        tools = dataclasses.replace(settings.tools, http_max_bytes=a.max_attachment_bytes + 1)
        self.fetcher = fetcher or HttpFetchTool(tools)
        #: models that refused an image under ``vision = "auto"`` (until restart)
        self.blind_models: set[str] = set()

    # -- images --------------------------------------------------------------------------------

    def vision_on(self, model: str) -> bool:
        v = self.settings.llm.vision
        return v == "true" or (v == "auto" and model not in self.blind_models)

    def image(self, data: bytes, declared_type: str, name: str, channel: str) -> NewAttachment:
        """One image checked: size cap, real type, dimensions; refused when the model cannot see."""
        try:
            if not self.vision_on(self.settings.llm.model):
                raise MediaError(
                    "vision_disabled",
                    f"The model {self.settings.llm.model} does not accept images here "
                    "([llm] vision); describe the image in words instead.",
                )
            cap = self.settings.agent.max_attachment_bytes
            if len(data) > cap:
                raise MediaError(
                    "too_large", f"The image is too large: {len(data)} bytes, the limit is {cap}."
                )
            if not data:
                raise MediaError("corrupt", "The image is empty.")
            info = image_info(data, declared_type)
        except MediaError as exc:
            self.metrics.refuse(channel, exc.code)
            raise
        clean = (
            name if name and name.isprintable() and len(name) <= 200 else f"image.{info.mime.split('/')[1]}"
        )
        return NewAttachment(data, info.mime, clean, info.width, info.height)

    def check_count(self, n: int, channel: str) -> None:
        limit = self.settings.agent.max_images_per_message
        if n > limit:
            self.metrics.refuse(channel, "too_many")
            raise MediaError("too_many", f"Too many images in one message: {n}, the limit is {limit}.")

    def image_from_data_url(self, url: str, name: str, channel: str) -> NewAttachment:
        """A ``data:image/...;base64,...`` URL (the /v1 image parts, the web page's uploads)."""
        m = _DATA_URL_RE.match(url.strip())
        if m is None or not m.group(3):
            self.metrics.refuse(channel, "corrupt")
            raise MediaError("corrupt", "The image is not a base64 data: URL.")
        cap = self.settings.agent.max_attachment_bytes
        if len(m.group(4)) > cap * 4 // 3 + 8:
            self.metrics.refuse(channel, "too_large")
            raise MediaError("too_large", f"The image is too large: the limit is {cap} bytes.")
        try:
            data = base64.b64decode(m.group(4), validate=True)
        except (binascii.Error, ValueError):
            self.metrics.refuse(channel, "corrupt")
            raise MediaError("corrupt", "The image's base64 data is invalid.") from None
        return self.image(data, m.group(1), name, channel)

    async def image_from_url(self, url: str, channel: str) -> NewAttachment:
        """An http(s) image URL, fetched under ``http_fetch``'s network policy and deadline."""
        if url.startswith("data:"):
            return self.image_from_data_url(url, "", channel)
        timeout = self.settings.tools.http_timeout_s
        try:
            with anyio.fail_after(timeout):
                page = await self.fetcher.fetch(url)
        except AddressRefused as exc:
            self.metrics.refuse(channel, "fetch_refused")
            raise MediaError("fetch_refused", f"Refused to fetch the image {url[:200]}: {exc}") from None
        except (ToolError, TimeoutError) as exc:
            self.metrics.refuse(channel, "fetch_failed")
            raise MediaError(
                "fetch_failed", f"Could not fetch the image {url[:200]}: {exc or 'timed out'}"
            ) from None
        if page.status >= 400:
            self.metrics.refuse(channel, "fetch_failed")
            raise MediaError("fetch_failed", f"Could not fetch the image {url[:200]}: HTTP {page.status}")
        if page.truncated:
            cap = self.settings.agent.max_attachment_bytes
            self.metrics.refuse(channel, "too_large")
            raise MediaError("too_large", f"The image at {url[:200]} is larger than {cap} bytes.")
        name = url.rsplit("/", 1)[-1].split("?", 1)[0][:100]
        return self.image(page.body, page.content_type, name, channel)

    # -- voice ---------------------------------------------------------------------------------

    async def transcribe(
        self, data: bytes, declared_type: str, channel: str, *, duration_s: float | None = None
    ) -> SpokenInput:
        """The text of a voice message; its declared duration (Telegram's) is checked before the
        upload, the transcription's after."""
        try:
            self.check_voice(len(data), duration_s)
            if not data:
                raise MediaError("corrupt", "The voice message is empty.")
            mime = audio_type(data, declared_type)
            transcript = await self.audio.transcribe(data, mime)
            duration = duration_s if duration_s is not None else transcript.duration_s
            self.check_voice(len(data), duration)
        except MediaError as exc:
            self.metrics.transcription_failed(channel, exc.code)
            log.info("media.voice_refused", channel=channel, code=exc.code, size=len(data))
            raise
        self.metrics.transcribed(channel, duration)
        log.info(
            "media.transcribed",
            channel=channel,
            size=len(data),
            duration_s=duration,
            chars=len(transcript.text),
        )
        return SpokenInput(transcript.text, VoiceNote(mime, len(data), duration))

    def check_voice(self, size: int, duration_s: float | None) -> None:
        """The voice limits (``max_audio_bytes``, ``max_audio_seconds``): a channel that knows the
        numbers before downloading (Telegram) checks them here first."""
        a = self.settings.agent
        if size > a.max_audio_bytes:
            raise MediaError(
                "too_large",
                f"The voice message is too large: {size} bytes, the limit is {a.max_audio_bytes}.",
            )
        if duration_s is not None and duration_s > a.max_audio_seconds:
            raise MediaError(
                "too_long",
                f"The voice message is too long: {duration_s:g} s, the limit is {a.max_audio_seconds} s.",
            )

    async def speak(self, text: str, channel: str) -> bytes | None:
        """A spoken reply (Ogg/Opus), or None when spoken replies are off or the service failed (the
        text reply is sent anyway; the failure is logged and counted)."""
        if not self.audio.can_speak or not text.strip():
            return None
        try:
            audio = await self.audio.speak(text)
        except MediaError as exc:
            self.metrics.spoke(channel, False)
            log.warning("media.speech_failed", channel=channel, code=exc.code, error=str(exc))
            return None
        self.metrics.spoke(channel, True)
        return audio


def descriptors(images: list[tuple[str, NewAttachment]], voice: VoiceNote | None) -> str:
    """A message's ``attachments`` field: JSON text of its stored images (sid, attachment) and voice."""
    items: list[dict[str, object]] = [
        {
            "kind": "image",
            "id": sid,
            "name": a.name,
            "mime": a.mime,
            "width": a.width,
            "height": a.height,
            "size": len(a.data),
        }
        for sid, a in images
    ]
    if voice is not None:
        items.append(voice.descriptor())
    return json.dumps(items, separators=(",", ":")) if items else ""
