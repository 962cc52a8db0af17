"""The media error: one clear, user-safe line for every way an image or a voice message can be bad.

``code`` is stable for channels and the web API: ``too_large``, ``too_long``, ``unsupported_type``,
``type_mismatch``, ``corrupt``, ``too_many``, ``voice_disabled``, ``transcription_failed``,
``transcription_unavailable``, ``vision_disabled``, ``fetch_refused``, ``fetch_failed``.
"""

from __future__ import annotations

from agent.errors import AgentError


class MediaError(AgentError):
    """Bad or unusable media input; the message is shown to the user as it is (never holds secrets)."""

    user_safe = True

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
