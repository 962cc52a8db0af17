"""The tool seam: a tool is a name, a JSON Schema and an async ``run``.

The registry validates arguments against the schema, enforces the timeout and the result size cap,
turns every failure into an error result the model sees, and writes every execution to the audit log.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from store import Scope, Store


@dataclass(frozen=True, slots=True)
class ToolCaller:
    """Who is calling: handed to every tool run."""

    store: Store
    scope: Scope
    conversation_id: str
    channel: str
    #: group scopes never see personal memories
    is_group: bool = False


@dataclass(frozen=True, slots=True)
class ToolResult:
    content: str
    ok: bool = True


class ToolError(Exception):
    """A tool failure whose message is safe and useful to show the model (becomes ``error: <message>``)."""


class Tool(ABC):
    """A callable tool: ``name`` matches ``^[a-zA-Z0-9_-]{1,64}$``; ``parameters`` is a JSON Schema object.

    ``run`` returns a :class:`ToolResult` or raises :class:`ToolError` (or anything else: the registry
    turns every exception into an error result).
    """

    name: str
    description: str
    #: JSON Schema of the arguments object
    parameters: dict[str, Any]

    @abstractmethod
    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult: ...
