"""Tool output made storable: every result passes here before the turn stores it or the model sees it.

A tool's output comes from outside (a fetched page, an MCP server, a file): it may hold characters the
store refuses (NUL), that no UTF-8 encoder can write (lone surrogates, e.g. from a JSON ``"\\ud800"``
escape) or that only confuse a terminal or a JSON consumer (the other C0 control characters), and it
may be of any size. Stored as is, such a result failed the turn (the store's NUL check answered
``invalid_input``, blaming the user) and left the tool call without its result. Here each such
character becomes U+FFFD (tab, line feed and carriage return stay) and the text is capped at
``agent.max_tool_result_chars`` with a visible note, so a tool can never fail a turn through its
output. :class:`ResultCounts` counts both repairs per tool for ``/metrics``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from agent.tools.base import ToolResult

REPLACEMENT = "\ufffd"
#: NUL and the other C0 controls except tab, line feed and carriage return; lone surrogates
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


@dataclass
class ResultCounts:
    """Tool results repaired, per tool name (one event loop: plain ints)."""

    sanitised: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    truncated: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def storable_text(text: str) -> tuple[str, int]:
    """``text`` with every unstorable character replaced, and how many were."""
    replaced = 0

    def swap(_: re.Match[str]) -> str:
        nonlocal replaced
        replaced += 1
        return REPLACEMENT

    return _UNSTORABLE.sub(swap, text), replaced


def cap_result(result: ToolResult, max_chars: int) -> ToolResult:
    """Cut content longer than ``max_chars`` and say so; the whole stays within ``max_chars``."""
    content = result.content
    if len(content) <= max_chars:
        return result
    note = f"\n[truncated: showing the first {{n}} of {len(content)} characters]"
    keep = max(0, max_chars - len(note) - 8)
    return ToolResult(content=content[:keep] + note.format(n=keep), ok=result.ok)


def storable_result(
    tool: str, result: ToolResult, max_chars: int, counts: ResultCounts | None = None
) -> ToolResult:
    """``result`` with its content made storable and capped; ``counts`` records what was repaired."""
    content, replaced = storable_text(result.content)
    if replaced:
        result = ToolResult(content=content, ok=result.ok)
    capped = cap_result(result, max_chars)
    if counts is not None:
        if replaced:
            counts.sanitised[tool] += 1
        if capped is not result:
            counts.truncated[tool] += 1
    return capped
