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
class ToolContext:
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


class Tool(ABC):
    name: str
    description: str
    #: JSON Schema of the arguments object
    parameters: dict[str, Any]

    @abstractmethod
    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult: ...
