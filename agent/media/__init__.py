"""Voice and images in: checks, transcription, spoken replies, image attachments (docs/agent.md)."""

from __future__ import annotations

from agent.media.audio import AudioService, Transcript
from agent.media.errors import MediaError
from agent.media.intake import MediaIntake, SpokenInput, VoiceNote, descriptors
from agent.media.metrics import MediaMetrics
from agent.media.sniff import IMAGE_TYPES, image_info

__all__ = [
    "IMAGE_TYPES",
    "AudioService",
    "MediaError",
    "MediaIntake",
    "MediaMetrics",
    "SpokenInput",
    "Transcript",
    "VoiceNote",
    "descriptors",
    "image_info",
]
