"""Images and voice on the web channel: request parsing, signed attachment links, error mapping.

Attachment links: the page shows a stored image with a plain ``<img src="/api/attachments/ID?t=...">``
(same origin, so the page's ``img-src 'self'`` policy stays and no ``blob:`` URL is needed). An
``<img>`` cannot send the bearer token, so the link carries a capability instead: the scope and sid,
an expiry, and an HMAC of them under a key made at start (links die with the process, or after
:data:`LINK_TTL_S`; the page fetches them again with the messages). A request with the bearer token
works without ``t`` as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from agent.media import MediaIntake
from channels.web.errors import ApiError
from store import InvalidInput, NewAttachment, Scope, validate_context, validate_sid, validate_user

LINK_TTL_S = 6 * 3600
# -- signed links ------------------------------------------------------------------------------


def sign_link(key: bytes, scope: Scope, sid: str, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + LINK_TTL_S)
    body = base64.urlsafe_b64encode(
        json.dumps([scope.context, scope.user_id, sid, expires], separators=(",", ":")).encode()
    ).rstrip(b"=")
    mac = base64.urlsafe_b64encode(hmac.digest(key, body, hashlib.sha256)[:18])
    return f"/api/attachments/{sid}?t={body.decode()}.{mac.decode()}"


def check_link(key: bytes, token: str, sid: str) -> Scope:
    """The scope a link was made for; 404 for anything wrong (a bad link reveals nothing)."""
    missing = ApiError(404, "not_found", "attachment not found")
    body, _, mac = token.partition(".")
    want = base64.urlsafe_b64encode(hmac.digest(key, body.encode(), hashlib.sha256)[:18]).decode()
    # bytes: compare_digest refuses str with non-ASCII characters (a TypeError, then a 500)
    if not hmac.compare_digest(want.encode(), mac.encode("utf-8", "surrogatepass")):
        raise missing
    try:
        context, user, linked, expires = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        scope = Scope(validate_context(context), validate_user(user))
        validate_sid(linked)
    except (ValueError, TypeError, InvalidInput):
        raise missing from None
    if linked != sid or not isinstance(expires, int) or expires < time.time():
        raise missing
    return scope


# -- request parts -------------------------------------------------------------------------------


def images_field(media: MediaIntake, body: dict[str, Any], channel: str) -> tuple[NewAttachment, ...]:
    """``images``: a list of ``{"data_url": "data:image/png;base64,...", "name": "cat.png"}``."""
    raw = body.get("images")
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(i, dict) for i in raw):
        raise ApiError(400, "invalid_field", "images must be a list of {data_url, name} objects")
    media.check_count(len(raw), channel)  # a MediaError is rendered by the app's error handler
    out = []
    for item in raw:
        url, name = item.get("data_url"), item.get("name", "")
        if not isinstance(url, str) or not isinstance(name, str) or set(item) - {"data_url", "name"}:
            raise ApiError(400, "invalid_field", "each image is {data_url: string, name?: string}")
        out.append(media.image_from_data_url(url, name, channel))
    return tuple(out)


def upload_limit(media: MediaIntake, base: int) -> int:
    """A chat body may carry its images as base64: the JSON cap grows by what they may take."""
    a = media.settings.agent
    return base + a.max_images_per_message * (a.max_attachment_bytes * 4 // 3 + 1024)
