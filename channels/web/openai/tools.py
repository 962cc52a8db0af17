"""Client tools on the OpenAI-compatible endpoint: the request's ``tools``, its ``role: tool`` results,
and the ``tool_calls`` of a completion that hands calls to the client (:mod:`agent.client_tools`).

A client tool whose name is one of the agent's own tools is refused (400 ``tool_name_conflict``
naming it): the model could not tell the two apart, and the agent's tools keep working for every
other client.
"""

from __future__ import annotations

import re
from typing import Any

from agent.client_tools import ClientResult
from agent.providers.base import ToolCall, ToolSpec
from channels.web.errors import ApiError
from channels.web.openai.history import text_of

#: OpenAI's rule for function names
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TOOLS = 128


def _bad(message: str, code: str = "invalid_tools") -> ApiError:
    return ApiError(400, code, message, param="tools")


def client_tools(body: dict[str, Any], own: tuple[str, ...]) -> tuple[ToolSpec, ...]:
    """The request's ``tools`` as specs; 400 for a malformed one, a repeated name or one that clashes
    with an agent tool in ``own``."""
    raw = body.get("tools")
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_TOOLS:
        raise _bad(f"tools must be a list of at most {MAX_TOOLS} function tools")
    specs: list[ToolSpec] = []
    for item in raw:
        fn = item.get("function") if isinstance(item, dict) and item.get("type") == "function" else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(fn, dict) or not isinstance(name, str) or not _NAME_RE.match(name):
            raise _bad(
                'every tool must be {"type": "function", "function": {"name": ...}}, names of A-Za-z0-9_-'
            )
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        description = fn.get("description") or ""
        if not isinstance(params, dict) or not isinstance(description, str):
            raise _bad(f"tool {name!r}: parameters must be an object and description a string")
        if name in own:
            raise _bad(
                f"tool {name!r} has the name of one of the agent's own tools; rename it", "tool_name_conflict"
            )
        if any(s.name == name for s in specs):
            raise _bad(f"tool {name!r} is declared twice")
        specs.append(ToolSpec(name, description, params))
    return tuple(specs)


def tool_results(messages: list[Any]) -> tuple[ClientResult, ...]:
    """The ``role: tool`` messages that end ``messages`` (the results of calls handed to the client), in
    order; empty when the last message is not one."""
    out: list[ClientResult] = []
    for msg in reversed(messages):
        if not isinstance(msg, dict) or msg.get("role") != "tool":
            break
        call_id = msg.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise ApiError(400, "invalid_messages", "a tool message needs its tool_call_id", param="messages")
        out.append(ClientResult(call_id, text_of(msg.get("content"))))
    return tuple(reversed(out))


def wire_calls(calls: tuple[ToolCall, ...], *, indexed: bool = False) -> list[dict[str, Any]]:
    """The calls in OpenAI's shape (``indexed``: as ``delta.tool_calls`` of a stream chunk)."""
    return [
        {
            **({"index": i} if indexed else {}),
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
        }
        for i, c in enumerate(calls)
    ]
