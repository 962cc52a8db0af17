"""Telegram pairing on the web page: a signed-in user approves a pairing code for themselves.

``POST /api/pairing/approve`` ``{"code": "ABCD2345"}`` links the Telegram id that asked for the code to
the caller (the bearer token's user, or the page's local user without tokens), exactly as
``hero-agent pair approve CODE --user <caller>`` would. ``GET /api/pairing/links`` lists the Telegram
ids linked to the caller. Pending codes are not listed here (they name strangers): the person who
asked tells the code to the one they want to be linked to.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from channels.web.auth import authenticate
from channels.web.errors import read_json_object
from channels.web.state import web_state
from channels.web.views import only_keys, str_field
from store import IdentityLink


def _link_view(link: IdentityLink) -> dict[str, object]:
    return {"telegram_id": link.external_id, "user": link.user, "linked_at": link.linked_at, "by": link.by}


async def approve(request: Request) -> Response:
    user = authenticate(request)
    state = web_state(request)
    body = await read_json_object(request, state.settings.web.max_body_bytes)
    only_keys(body, {"code"})
    code = str_field(body, "code", required=True, max_len=64) or ""
    link = await state.agent.pairing.approve(code, user, by=f"web:{user}")  # PairingError: its code
    return JSONResponse(_link_view(link))


async def links(request: Request) -> Response:
    user = authenticate(request)
    mine = [x for x in await web_state(request).agent.pairing.links() if x.user == user]
    return JSONResponse({"items": [_link_view(x) for x in mine]})


ROUTES = [
    Route("/api/pairing/approve", approve, methods=["POST"]),
    Route("/api/pairing/links", links, methods=["GET"]),
]
