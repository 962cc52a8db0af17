"""Speech to text and text to speech through an OpenAI-compatible audio server.

``POST {base}/audio/transcriptions`` (multipart: ``file``, ``model``, ``response_format=verbose_json``)
turns a voice message into the text of the user's message; ``verbose_json`` also reports the audio's
``duration``, the only way the daemon learns it for uploads (it has no audio decoder; Telegram says it
for voice notes). ``POST {base}/audio/speech`` (``response_format=opus``) makes a spoken reply.

The server is the provider's (``[llm] base_url``/``api_key``) unless ``[llm] transcription_base_url``
(and ``transcription_api_key``) name another one, such as a local Whisper server. Every failure is one
:class:`~agent.media.errors.MediaError` whose message never holds the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from agent.media.errors import MediaError
from agent.media.sniff import audio_extension
from agent.providers.http import scrub
from config.settings import LLMSettings

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    #: seconds, as the server reported them (0.0: not reported)
    duration_s: float = 0.0


class AudioService:
    """The audio endpoints of one server; ``transport`` is the test seam (like the providers')."""

    def __init__(self, settings: LLMSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        base = settings.transcription_base_url or settings.base_url
        same_server = (
            not settings.transcription_base_url or settings.transcription_base_url == settings.base_url
        )
        self._secret = settings.transcription_api_key or (settings.api_key if same_server else "")
        headers = {"authorization": f"Bearer {self._secret}"} if self._secret else {}
        # an Anthropic provider has no audio endpoints: voice needs a transcription_base_url then
        self._usable = settings.provider == "openai" or bool(settings.transcription_base_url)
        self._client = httpx.AsyncClient(
            base_url=base.rstrip("/") + "/",
            headers={"user-agent": "hero-agent", **headers},
            timeout=httpx.Timeout(settings.audio_timeout_s, connect=settings.connect_timeout_s),
            transport=transport,
        )

    @property
    def can_transcribe(self) -> bool:
        return bool(self.settings.transcription_model) and self._usable

    @property
    def can_speak(self) -> bool:
        return bool(self.settings.speech_model) and self._usable

    async def aclose(self) -> None:
        await self._client.aclose()

    async def transcribe(self, data: bytes, mime: str) -> Transcript:
        """The text spoken in ``data`` (a checked audio file of type ``mime``)."""
        if not self.can_transcribe:
            raise MediaError(
                "voice_disabled",
                "Voice messages are not enabled here: set [llm] transcription_model (and "
                "transcription_base_url for a provider without audio endpoints).",
            )
        files = {"file": (f"voice.{audio_extension(mime)}", data, mime)}
        form = {"model": self.settings.transcription_model, "response_format": "verbose_json"}
        resp = await self._post("audio/transcriptions", "transcription", data=form, files=files)
        text, duration = _transcript(resp)
        if not text.strip():
            raise MediaError("transcription_failed", "No speech was recognised in the voice message.")
        return Transcript(text.strip(), duration)

    async def speak(self, text: str) -> bytes:
        """``text`` spoken, as Ogg/Opus bytes (what Telegram's sendVoice takes)."""
        body = {
            "model": self.settings.speech_model,
            "input": text[:4096],
            "voice": self.settings.speech_voice,
            "response_format": "opus",
        }
        resp = await self._post("audio/speech", "speech", json=body)
        if not resp.content:
            raise MediaError("speech_failed", "The speech service answered no audio.")
        return resp.content

    async def _post(self, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = await self._client.post(path, **kwargs)
        except httpx.HTTPError as exc:
            log.warning("media.audio_unreachable", endpoint=path, error_type=type(exc).__name__)
            raise MediaError(
                f"{what}_unavailable",
                f"The {what} service cannot be reached; try again later, or send text.",
                retryable=True,
            ) from None
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            raise MediaError(
                f"{what}_unavailable",
                f"The {what} service is unavailable (HTTP {resp.status_code}); "
                "try again later, or send text.",
                retryable=True,
            )
        if resp.status_code >= 400:
            detail = scrub(_error_text(resp), self._secret)
            raise MediaError(
                f"{what}_failed", f"The {what} service refused the audio (HTTP {resp.status_code}): {detail}"
            )
        return resp


def _error_text(resp: httpx.Response) -> str:
    try:
        payload = resp.json()
    except ValueError:
        return resp.text
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return str(err["message"])
    return resp.text


def _transcript(resp: httpx.Response) -> tuple[str, float]:
    """Text and duration from ``verbose_json`` (or plain ``json``, or a text body)."""
    try:
        payload = resp.json()
    except (ValueError, json.JSONDecodeError):
        return resp.text, 0.0
    if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
        raise MediaError("transcription_failed", "The transcription service answered something unreadable.")
    duration = payload.get("duration")
    return payload["text"], float(duration) if isinstance(duration, int | float) else 0.0
