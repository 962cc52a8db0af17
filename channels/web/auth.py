"""Who is asking, and in which context: bearer tokens, the trusted proxy header, context selection.

* ``[web] trusted_user_header`` set and present on the request: that header names the user (only
  enable this behind a proxy that sets it and strips it from clients).
* ``[web] tokens`` configured: ``Authorization: Bearer <token>`` is required and maps to a user
  (``settings.user_for_token``); anything else answers 401.
* no tokens configured: every request is the one local user: ``[web] local_user``, by default the OS
  user running the daemon, who is also the CLI's default user (the channel then refuses to listen on
  a non-loopback address).

The context comes from ``context_name`` (JSON body, then query string), else the ``X-Hero-Context``
header, else ``[agent] default_context``; an invalid name answers 400.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request

from channels.web.errors import ApiError
from channels.web.state import web_state
from store import InvalidInput, Scope, validate_context, validate_user

CONTEXT_HEADER = "x-hero-context"
INVALID_CONTEXT = "invalid context name: use 1-64 of a-z 0-9 _ - starting with a letter or digit"


def authenticate(request: Request) -> str:
    """The canonical user id of the caller, or ApiError 401."""
    settings = web_state(request).settings
    web = settings.web
    if web.trusted_user_header:
        proxied = request.headers.get(web.trusted_user_header)
        if proxied:
            try:
                return validate_user(proxied.strip())
            except InvalidInput:
                raise _unauthorized("the proxy user header is not a valid user id") from None
    if not web.tokens:
        return settings.web_local_user
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("missing bearer token")
    token = token.strip()
    user: str | None = None
    # compare against every configured token so the timing says nothing about which one matched
    for known, name in web.tokens:
        if hmac.compare_digest(known.encode(), token.encode()):
            user = name
    if user is None:
        raise _unauthorized("invalid bearer token")
    return user


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def context_name(request: Request, body: dict[str, Any] | None = None) -> str:
    """The context this request works in, see the module docstring.

    Every selector present is validated (an invalid one is a 400 even when a higher one wins).
    """
    given: list[object] = []
    if body is not None and body.get("context_name") is not None:
        given.append(body["context_name"])
    if "context_name" in request.query_params:
        given.append(request.query_params["context_name"])
    if CONTEXT_HEADER in request.headers:
        given.append(request.headers[CONTEXT_HEADER])
    for name in given:
        if not isinstance(name, str):
            raise ApiError(400, "invalid_context", "context_name must be a string")
        try:
            validate_context(name)
        except InvalidInput:
            raise ApiError(400, "invalid_context", INVALID_CONTEXT) from None
    if given:
        return str(given[0])
    return web_state(request).agent.settings.agent.default_context


def caller_scope(request: Request, body: dict[str, Any] | None = None) -> Scope:
    """Authenticate, then pick the context: the (context, user) scope of every store call."""
    return scope_of(request, authenticate(request), body)


def scope_of(request: Request, user: str, body: dict[str, Any] | None = None) -> Scope:
    """The scope of an already authenticated ``user``: a route that authenticates before reading
    its body (401 first) picks the context from the body without authenticating a second time."""
    return Scope(context_name(request, body), user)
