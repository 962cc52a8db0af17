"""Counters of the media paths (transcriptions, spoken replies, attachments), rendered with the turn
metrics in ``GET /metrics``. One event loop: plain ints need no locks."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from agent.metrics import Labels, _labels, counter_lines


@dataclass
class MediaMetrics:
    transcriptions: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    transcription_failures: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    transcribed_seconds: float = 0.0
    speech: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    attachments: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    attachment_bytes: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))
    refused: dict[Labels, int] = field(default_factory=lambda: defaultdict(int))

    def transcribed(self, channel: str, seconds: float) -> None:
        self.transcriptions[_labels(channel=channel)] += 1
        self.transcribed_seconds += seconds

    def transcription_failed(self, channel: str, code: str) -> None:
        self.transcription_failures[_labels(channel=channel, code=code)] += 1

    def spoke(self, channel: str, ok: bool) -> None:
        self.speech[_labels(channel=channel, outcome="ok" if ok else "error")] += 1

    def stored(self, channel: str, size: int) -> None:
        self.attachments[_labels(channel=channel)] += 1
        self.attachment_bytes[_labels(channel=channel)] += size

    def refuse(self, channel: str, code: str) -> None:
        self.refused[_labels(channel=channel, code=code)] += 1

    def render_lines(self) -> list[str]:
        out = counter_lines(
            "hero_agent_transcriptions_total", "Voice messages transcribed.", dict(self.transcriptions)
        )
        out += counter_lines(
            "hero_agent_transcription_failures_total",
            "Voice messages that could not be transcribed, by reason.",
            dict(self.transcription_failures),
        )
        out += [
            "# HELP hero_agent_transcribed_audio_seconds_total Seconds of audio transcribed.",
            "# TYPE hero_agent_transcribed_audio_seconds_total counter",
            f"hero_agent_transcribed_audio_seconds_total {round(self.transcribed_seconds, 3)}",
        ]
        out += counter_lines(
            "hero_agent_speech_replies_total", "Spoken replies synthesised.", dict(self.speech)
        )
        out += counter_lines(
            "hero_agent_attachments_stored_total", "Attachments (images) stored.", dict(self.attachments)
        )
        out += counter_lines(
            "hero_agent_attachment_bytes_total", "Bytes of attachments stored.", dict(self.attachment_bytes)
        )
        out += counter_lines(
            "hero_agent_media_refused_total", "Images and audio refused, by reason.", dict(self.refused)
        )
        return out
