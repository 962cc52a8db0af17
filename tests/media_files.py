"""Media files made by the tests themselves (nothing downloaded): PNG images written with zlib and
struct, WAV audio written with the standard library's ``wave``."""

from __future__ import annotations

import io
import math
import struct
import wave
import zlib


def png(width: int = 4, height: int = 3, rgb: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    """A valid truecolour PNG of one colour."""
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def wav(seconds: float = 0.5, rate: int = 8000, tone_hz: float = 440.0) -> bytes:
    """A mono 16-bit WAV of a sine tone."""
    frames = int(seconds * rate)
    samples = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * tone_hz * i / rate))) for i in range(frames)
    )
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples)
    return buf.getvalue()


def ogg_opus(packets: int = 3) -> bytes:
    """An Ogg stream of Opus headers and silent packets, as Telegram's voice notes are (the daemon
    only looks at the container; the fake transcription server does not decode)."""

    def crc(data: bytes) -> int:
        # Ogg's CRC-32: polynomial 0x04C11DB7, not reflected, initial value 0
        value = 0
        for byte in data:
            value ^= byte << 24
            for _ in range(8):
                value = ((value << 1) ^ 0x04C11DB7 if value & 0x80000000 else value << 1) & 0xFFFFFFFF
        return value

    def page(seq: int, flags: int, granule: int, packet: bytes) -> bytes:
        lacing = bytes([255] * (len(packet) // 255) + [len(packet) % 255])
        head = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, 7, seq, 0, len(lacing)) + lacing
        raw = head + packet
        return raw[:22] + struct.pack("<I", crc(raw)) + raw[26:]

    opus_head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, 48000, 0, 0)
    opus_tags = b"OpusTags" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0)
    pages = [page(0, 2, 0, opus_head), page(1, 0, 0, opus_tags)]
    for i in range(packets):
        pages.append(page(2 + i, 4 if i == packets - 1 else 0, 960 * (i + 1), b"\xf8\xff\xfe"))
    return b"".join(pages)
