"""The generation parameters of an OpenAI chat request, checked, as the agent's :class:`TurnOptions`.

``response_format``, ``stop``, ``max_tokens``/``max_completion_tokens``, ``temperature``, ``top_p``,
``seed``, ``tool_choice`` and ``parallel_tool_calls`` go to the provider for every model call of the
turn (docs/web.md has the table per provider); a provider without an equivalent is refused with 400
``unsupported_parameter`` naming the parameter. ``n`` above 1 is refused the same way (one turn gives
one answer). Parameters the endpoint does not act on (``logit_bias``, ``presence_penalty`` ...) are
ignored, as many OpenAI-compatible servers do.
"""

from __future__ import annotations

from typing import Any

from agent.providers.base import Provider, Sampling
from agent.turn.options import TurnOptions
from channels.web.errors import ApiError
from channels.web.openai.history import text_of

MAX_STOP = 4
RESPONSE_FORMATS = ("text", "json_object", "json_schema")


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", message, param=param)


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _bad(name, f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    ok = isinstance(items, list) and all(isinstance(s, str) and s for s in items)
    if not ok or len(items) > MAX_STOP:
        raise _bad("stop", f"stop must be a string or a list of at most {MAX_STOP} non-empty strings")
    return tuple(items)


def _max_tokens(body: dict[str, Any]) -> int | None:
    found = None
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _bad(name, f"{name} must be a positive integer")
        found = value if found is None else min(found, value)
    return found


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    value = body.get("response_format")
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in RESPONSE_FORMATS:
        raise _bad("response_format", "response_format must be of type text, json_object or json_schema")
    if value["type"] == "json_schema" and not isinstance(value.get("json_schema"), dict):
        raise _bad("response_format", "response_format of type json_schema needs a json_schema object")
    return value


def _tool_choice(body: dict[str, Any]) -> str | dict[str, Any] | None:
    value = body.get("tool_choice")
    if value is None or value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict) and isinstance(value.get("function"), dict) and value["function"].get("name"):
        return value
    raise _bad("tool_choice", 'tool_choice must be "auto", "none", "required" or a function object')


def turn_options(body: dict[str, Any], provider: Provider, system: str) -> TurnOptions:
    """The request's options; 400 for a bad value, ``n`` > 1 or a parameter the provider lacks."""
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise _bad("n", "n must be a positive integer")
    if n is not None and n > 1:
        raise ApiError(400, "unsupported_parameter", "n > 1 is not supported: one answer a turn", param="n")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _bad("seed", "seed must be an integer")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _bad("parallel_tool_calls", "parallel_tool_calls must be a boolean")
    sampling = Sampling(
        stop=_stop(body),
        top_p=_number(body, "top_p", 0.0, 1.0),
        seed=seed,
        response_format=_response_format(body),
        tool_choice=_tool_choice(body),
        parallel_tool_calls=parallel,
    )
    refused = provider.refused_parameter(sampling)
    if refused:
        raise ApiError(
            400,
            "unsupported_parameter",
            f"{refused} is not supported by the configured provider ({provider.name})",
            param=refused,
        )
    return TurnOptions(
        sampling=sampling,
        max_tokens=_max_tokens(body),
        temperature=_number(body, "temperature", 0.0, 2.0),
        system=system,
    )


def client_system(messages: list[Any]) -> str:
    """The text of the request's ``system`` and ``developer`` messages, in order."""
    parts = [
        text_of(m.get("content")).strip()
        for m in messages
        if isinstance(m, dict) and m.get("role") in ("system", "developer")
    ]
    return "\n\n".join(p for p in parts if p)
