"""What a file really is, from its first bytes: image type and size, audio container.

Why sniff: a content type is a claim by the sender (a browser, a client, a server fetched over HTTP)
and may be wrong or a lie; the provider would refuse (or mis-read) such a file after the message was
stored. So the bytes decide; a declared type that names another format is refused with one clear
message, and bytes that are no image (or a truncated one) are refused as corrupt. Only the headers
are parsed (dimensions), nothing is decoded: the daemon has no image or audio decoder.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from agent.media.errors import MediaError

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
#: declared types that mean "whatever it is" (the bytes decide)
_UNSPECIFIC = {"", "application/octet-stream", "binary/octet-stream"}
_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/mp3": "audio/mpeg",
    "audio/x-m4a": "audio/mp4",
    "audio/m4a": "audio/mp4",
    "audio/opus": "audio/ogg",
    "video/webm": "audio/webm",
    "video/ogg": "audio/ogg",
    "video/mp4": "audio/mp4",
    "audio/x-flac": "audio/flac",
}


@dataclass(frozen=True, slots=True)
class ImageInfo:
    mime: str
    width: int
    height: int


def normalise_type(declared: str) -> str:
    base = (declared or "").split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def image_info(data: bytes, declared: str = "") -> ImageInfo:
    """The image's real type and size; MediaError when it is no image, a corrupt one, or not what the
    sender said it is."""
    claimed = normalise_type(declared)
    if claimed not in _UNSPECIFIC and not claimed.startswith("image/"):
        raise MediaError("unsupported_type", f"A file of type {claimed} is not an image.")
    info = _sniff_image(data)
    if info is None:
        if claimed in _UNSPECIFIC or claimed in IMAGE_TYPES:
            raise MediaError(
                "corrupt", "The image could not be read: it is not a valid PNG, JPEG, GIF or WebP file."
            )
        raise MediaError(
            "unsupported_type", f"Images of type {claimed} are not supported: send PNG, JPEG, GIF or WebP."
        )
    if claimed not in _UNSPECIFIC and claimed != info.mime:
        raise MediaError("type_mismatch", f"The file claims to be {claimed} but is {info.mime}.")
    if info.width < 1 or info.height < 1:
        raise MediaError("corrupt", "The image could not be read: it has no size.")
    return info


def _sniff_image(data: bytes) -> ImageInfo | None:
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(data)
        if data.startswith(b"\xff\xd8\xff"):
            return _jpeg(data)
        if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
            w, h = struct.unpack("<HH", data[6:10])
            return ImageInfo("image/gif", w, h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
    except struct.error:
        return None
    return None


def _png(data: bytes) -> ImageInfo | None:
    if data[12:16] != b"IHDR" or b"IEND" not in data[-16:]:
        return None  # no header chunk, or truncated (the IEND chunk closes every PNG)
    w, h = struct.unpack(">II", data[16:24])
    return ImageInfo("image/png", w, h)


def _jpeg(data: bytes) -> ImageInfo | None:
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return None  # truncated: the end-of-image marker closes every JPEG
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return ImageInfo("image/jpeg", w, h)
        i += 2 + length
    return None


def _webp(data: bytes) -> ImageInfo | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return ImageInfo("image/webp", w, h)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return ImageInfo("image/webp", w & 0x3FFF, h & 0x3FFF)
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return ImageInfo("image/webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    return None


AUDIO_TYPES = ("audio/ogg", "audio/wav", "audio/mpeg", "audio/mp4", "audio/webm", "audio/flac")
_AUDIO_EXT = {
    "audio/ogg": "ogg",
    "audio/wav": "wav",
    "audio/mpeg": "mp3",
    "audio/mp4": "m4a",
    "audio/webm": "webm",
    "audio/flac": "flac",
}


def audio_type(data: bytes, declared: str = "") -> str:
    """The audio container of ``data`` (one of :data:`AUDIO_TYPES`); MediaError when the bytes are no
    audio file the transcription services read, or not what the sender said."""
    claimed = normalise_type(declared)
    if claimed not in _UNSPECIFIC and not claimed.startswith("audio/"):
        raise MediaError("unsupported_type", f"A file of type {claimed} is not audio.")
    real = _sniff_audio(data)
    if real is None:
        raise MediaError(
            "corrupt" if claimed in _UNSPECIFIC or claimed in AUDIO_TYPES else "unsupported_type",
            "The audio could not be read: send OGG/Opus, WAV, MP3, M4A, WebM or FLAC.",
        )
    if claimed not in _UNSPECIFIC and claimed != real:
        raise MediaError("type_mismatch", f"The file claims to be {claimed} but is {real}.")
    return real


def audio_extension(mime: str) -> str:
    """The file name extension transcription servers use to pick a decoder."""
    return _AUDIO_EXT.get(mime, "bin")


def _sniff_audio(data: bytes) -> str | None:
    if data.startswith(b"OggS"):
        return "audio/ogg"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data.startswith(b"ID3") or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    if data[4:8] == b"ftyp":
        return "audio/mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "audio/webm"
    if data.startswith(b"fLaC"):
        return "audio/flac"
    return None
