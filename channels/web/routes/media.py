"""``POST /api/voice/chat`` (audio in, a chat turn out), ``GET /api/attachments/{id}`` (a stored
image, for the page's ``<img>``) and ``GET /api/media`` (the caps the page shows).

``/api/voice/chat`` takes ``multipart/form-data``: the audio as the file field ``audio`` and the
options of ``/api/chat`` as fields (``conversation_id``, ``context_name``). The audio is checked and
transcribed BEFORE the stream starts, so a bad file, a missing transcription model or a service that
is down answers one plain JSON error (400/413/502/503) and nothing is stored. Then the stream is the
one of ``/api/chat`` with a ``transcript`` event (``text``, ``duration_s``) right after ``start``; the
stored user message is the transcript, marked as spoken (``attachments`` holds the voice descriptor).
"""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message

from agent.core import TurnRequest
from agent.media import IMAGE_TYPES
from channels.web.auth import authenticate, caller_scope, scope_of
from channels.web.errors import ApiError, read_limited
from channels.web.media import check_link
from channels.web.routes.chat import check_conversation, stream_turn
from channels.web.state import web_state
from channels.web.turns import request_key
from store import attachment_bytes

#: form fields besides the audio file
_VOICE_FIELDS = {"conversation_id", "context_name"}


async def voice_chat(request: Request) -> Response:
    user = authenticate(request)  # 401 before the body is read
    state = web_state(request)
    media = state.agent.media
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(
            415, "unsupported_media_type", "send multipart/form-data with the audio as the field 'audio'"
        )
    body = await read_limited(request, state.settings.agent.max_audio_bytes + 64 * 1024)

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=len(_VOICE_FIELDS))
    except Exception:  # Starlette raises its own and python-multipart's errors for a broken form
        raise ApiError(400, "invalid_form", "the multipart form could not be read") from None
    try:
        unknown = set(form.keys()) - _VOICE_FIELDS - {"audio"}
        if unknown:
            raise ApiError(400, "unknown_field", f"unknown field {sorted(unknown)[0]!r}")
        audio = form.get("audio")
        if not isinstance(audio, UploadFile):
            raise ApiError(400, "missing_field", "the audio file (field 'audio') is missing")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        data, declared = await audio.read(), audio.content_type or ""
    finally:
        await form.close()
    scope = scope_of(request, user, dict(fields))
    conversation_id = fields.get("conversation_id") or None
    if state.shutdown.is_set():
        raise ApiError(503, "shutting_down", "the server is shutting down")
    await check_conversation(state, scope, conversation_id)
    spoken = await media.transcribe(data, declared, "web")
    req = TurnRequest(
        scope=scope,
        channel="web",
        text=spoken.text,
        conversation_id=conversation_id,
        request_key=request_key(request, "web-voice"),
        voice=spoken.voice,
    )
    transcript = {"text": spoken.text, "duration_s": round(spoken.voice.duration_s, 2)}
    return stream_turn(state, req, (("transcript", transcript),))


async def media_limits(request: Request) -> Response:
    """What the page may send: the image and voice caps, and whether voice and images are on (the
    page shows the caps next to its attachment and microphone buttons, and hides what is off)."""
    authenticate(request)
    state = web_state(request)
    media, a = state.agent.media, state.settings.agent
    return JSONResponse(
        {
            "images": media.vision_on(state.settings.llm.model),
            "max_image_bytes": a.max_attachment_bytes,
            "max_images": a.max_images_per_message,
            "image_types": list(IMAGE_TYPES),
            "voice": media.audio.can_transcribe,
            "max_audio_bytes": a.max_audio_bytes,
            "max_audio_seconds": a.max_audio_seconds,
        }
    )


async def get_attachment(request: Request) -> Response:
    state = web_state(request)
    sid = request.path_params["id"]
    token = request.query_params.get("t")
    scope = check_link(state.link_key, token, sid) if token else caller_scope(request)
    att = await state.agent.store.attachments.get(scope, sid)
    return Response(
        attachment_bytes(att),
        media_type=att.mime,
        headers={
            "Cache-Control": "private, max-age=3600",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Content-Disposition": "inline",
        },
    )


ROUTES = [
    Route("/api/voice/chat", voice_chat, methods=["POST"]),
    Route("/api/media", media_limits, methods=["GET"]),
    Route("/api/attachments/{id}", get_attachment, methods=["GET"]),
]
