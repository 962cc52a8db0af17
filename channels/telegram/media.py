"""Voice notes, photos and image documents from Telegram: what a message carries and fetching it.

A message names its files by ``file_id``; the bot asks ``getFile`` for a path and downloads it from
the file base URL (``[telegram] file_base_url``, derived from ``api_base_url``; PTB does both). Caps
are applied before anything is downloaded where Telegram tells the size (``file_size``, and a voice
note's ``duration``), and again on the bytes by :class:`~agent.media.MediaIntake`, which also sniffs
the real type. The Bot API serves files of at most 20 MB to bots, so ``getFile`` refuses larger ones
itself ("file is too big"): that is one more clear message, not a crash.

* **Voice notes** (``voice``): transcribed; Telegram's ``duration`` is the audio's duration.
* **Photos** (``photo``): Telegram sends every size it made of the picture; the largest one within
  ``[agent] max_attachment_bytes`` is fetched (Telegram's photos are re-encoded JPEGs of at most
  2560 px a side, so this is the original resolution in practice).
* **Documents that are images** (``document`` with an image ``mime_type``, which is how a client
  sends a picture "as a file", uncompressed): treated like a photo, with the file's own name; other
  documents stay unsupported.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import structlog
from telegram import Bot, Message, PhotoSize
from telegram.error import TelegramError

from agent.media import IMAGE_TYPES, MediaError, MediaIntake, SpokenInput
from store import NewAttachment

log = structlog.get_logger("channels.telegram")

#: longest wait for one getFile and download (the Bot API serves files up to 20 MB)
DOWNLOAD_DEADLINE_S = 120.0


@dataclass(frozen=True, slots=True)
class TgFile:
    """One file of a message, as Telegram describes it."""

    file_id: str
    #: bytes, as Telegram declared them (0: not told)
    size: int = 0
    mime: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class Attached:
    """The media of a message: a voice note, or images (several for an album)."""

    voice: TgFile | None = None
    #: the voice note's duration in seconds, as Telegram reports it
    duration_s: float = 0.0
    images: tuple[TgFile, ...] = ()


def media_of(msg: Message, image_cap: int) -> Attached | None:
    """The voice note or image a message carries (None: neither, maybe another kind of media)."""
    if msg.voice is not None:
        v = msg.voice
        # the public ``duration`` warns about its coming type change; the timedelta is stable
        seconds = v._duration.total_seconds()
        return Attached(
            voice=TgFile(v.file_id, v.file_size or 0, v.mime_type or "audio/ogg"), duration_s=seconds
        )
    if msg.photo:
        best = choose_photo(msg.photo, image_cap)
        return Attached(
            images=(TgFile(best.file_id, best.file_size or 0, "", f"photo_{msg.message_id}.jpg"),)
        )
    doc = msg.document
    if doc is not None and (doc.mime_type or "").lower() in IMAGE_TYPES:
        return Attached(
            images=(TgFile(doc.file_id, doc.file_size or 0, doc.mime_type or "", doc.file_name or ""),)
        )
    return None


def choose_photo(sizes: tuple[PhotoSize, ...], cap: int) -> PhotoSize:
    """The largest size Telegram made whose declared bytes fit ``cap`` (the smallest when none does:
    its download is then refused as too large, with the one clear message)."""
    by_area = sorted(sizes, key=lambda p: p.width * p.height)
    fitting = [p for p in by_area if not p.file_size or p.file_size <= cap]
    return fitting[-1] if fitting else by_area[0]


class MediaFetcher:
    """Downloads a message's files and turns them into a turn's input, through the agent's intake."""

    def __init__(self, bot: Bot, intake: MediaIntake) -> None:
        self._bot = bot
        self._intake = intake

    async def transcript(self, voice: TgFile, duration_s: float) -> SpokenInput:
        """The voice note's text (MediaError for every way it can fail)."""
        a = self._intake.settings.agent
        if not self._intake.audio.can_transcribe:  # said before downloading anything
            self._intake.metrics.transcription_failed("telegram", "voice_disabled")
            raise MediaError(
                "voice_disabled",
                "Voice messages are not enabled on this bot (its owner can set [llm] "
                "transcription_model); please type your message.",
            )
        # refused before downloading when Telegram's numbers already break a cap
        try:
            self._intake.check_voice(voice.size, duration_s)
        except MediaError as exc:
            self._intake.metrics.refuse("telegram", exc.code)
            raise
        data = await self._download(voice, "voice message", a.max_audio_bytes)
        return await self._intake.transcribe(data, voice.mime, "telegram", duration_s=duration_s)

    async def images(self, files: tuple[TgFile, ...]) -> tuple[NewAttachment, ...]:
        """The checked images of a photo, an image document or an album."""
        self._intake.check_count(len(files), "telegram")
        cap = self._intake.settings.agent.max_attachment_bytes
        out = []
        for f in files:
            if f.size > cap:
                raise self._refused(
                    "too_large", f"The image is too large: {f.size} bytes, the limit is {cap}."
                )
            data = await self._download(f, "image", cap)
            out.append(self._intake.image(data, f.mime, f.name, "telegram"))
        return tuple(out)

    async def _download(self, f: TgFile, what: str, cap: int) -> bytes:
        """getFile, then the file itself; one clear MediaError when Telegram cannot give it."""
        try:
            with anyio.fail_after(DOWNLOAD_DEADLINE_S):
                tg_file = await self._bot.get_file(f.file_id)
                if tg_file.file_size and tg_file.file_size > cap:
                    raise self._refused(
                        "too_large",
                        f"The {what} is too large: {tg_file.file_size} bytes, the limit is {cap}.",
                    )
                data = bytes(await tg_file.download_as_bytearray())
        except (TelegramError, TimeoutError, RuntimeError) as exc:
            # never the error's text: PTB's messages may quote the file URL, which holds the token
            log.warning("telegram.download_failed", what=what, error=type(exc).__name__)
            raise self._refused(
                "fetch_failed", f"Could not download the {what} from Telegram; please send it again."
            ) from None
        return data

    def _refused(self, code: str, message: str) -> MediaError:
        """A refusal made here (before the intake sees the bytes), counted like the intake's."""
        self._intake.metrics.refuse("telegram", code)
        return MediaError(code, message)
