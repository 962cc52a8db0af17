"""Retries of OpenAI requests: a request sent again after a lost or cut answer is the same turn.

Detection runs before the history match (:mod:`channels.web.openai.history`), in this order:

1. ``Idempotency-Key: K``: the turn's request key is ``api-request:K``. When K is the key of the
   caller's previous request (per ``user`` namespace), the retry goes to that request's conversation.
2. Without a key, a request whose ``x-stainless-retry-count`` header (sent by the official SDKs and
   clients built on them) is above 0 and whose body equals (as JSON) the body of the same caller's
   previous request (same ``user`` namespace), sent less than :data:`RETRY_WINDOW_MS` ago, is that
   request's retry: same request key, same conversation.

The turn then does what any repeated request key does (``agent/turn/loop.py``): a completed answer is
returned again (same text, same completion id, no model call); an interrupted or failed one is
answered again by the re-run step (``agent/rerun.py``) on the stored user message, no second copy.

The previous request of each (context, user, namespace) is one small state entry, overwritten by
each request: its body's SHA-256, request key, conversation and time.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from channels.web.turns import request_key
from store import Scope, Store

#: how long after a request its SDK retry (same body, no key) is recognised
RETRY_WINDOW_MS = 10 * 60 * 1000
RETRY_COUNT_HEADER = "x-stainless-retry-count"


@dataclass(frozen=True, slots=True)
class RequestIdentity:
    """The request key of this request, and the conversation when it retries a known request."""

    key: str
    conversation_id: str | None
    retry: bool


def _state_key(namespace: str) -> str:
    return f"openai-last:{hashlib.sha256(namespace.encode()).hexdigest()[:32]}"


def _retry_count(request: Request) -> int:
    try:
        return int(request.headers.get(RETRY_COUNT_HEADER, "0"))
    except ValueError:
        return 0


def body_digest(body: dict[str, Any]) -> str:
    """The SHA-256 of the request body as JSON with sorted keys (equal bodies, equal digests)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def identify(store: Store, request: Request, scope: Scope, namespace: str, sha: str) -> RequestIdentity:
    """This request's key, and the conversation of the request it retries (None: not a known retry)."""
    given = request_key(request, "api")
    last = _parse(await store.state.get(scope, _state_key(namespace)))
    if given is not None:
        same = last is not None and last.get("key") == given
        return RequestIdentity(given, str(last["conversation"]) if same and last else None, same)
    at = last.get("at") if last is not None else None
    fresh = isinstance(at, int) and int(time.time() * 1000) - at < RETRY_WINDOW_MS
    if _retry_count(request) > 0 and fresh and last is not None and last.get("sha") == sha:
        return RequestIdentity(str(last["key"]), str(last["conversation"]), True)
    return RequestIdentity(f"api-auto:{uuid.uuid4().hex}", None, False)


async def remember(
    store: Store, scope: Scope, namespace: str, sha: str, *, ident: RequestIdentity, conversation_id: str
) -> None:
    """Keep this request as the namespace's previous one (before its turn runs: a cut turn's retry
    must find it)."""
    value = {
        "sha": sha,
        "key": ident.key,
        "conversation": conversation_id,
        "at": int(time.time() * 1000),
    }
    await store.state.set(scope, _state_key(namespace), json.dumps(value, separators=(",", ":")))


def _parse(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) and value.get("key") and value.get("conversation") else None
