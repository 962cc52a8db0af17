"""Built-in memory tools: ``memory_save``, ``memory_search``, ``memory_forget``.

They act on ``ctx.scope`` only, which is the (context, user) of the turn. In a group chat the agent
passes the group's scope, so these tools then read and write the group's memories and never the
personal memories of the people in it (SPEC 5). An id from another scope answers exactly like a
missing one.
"""

from __future__ import annotations

import time
from typing import Any

from agent.tools.base import Tool, ToolCaller, ToolError, ToolResult
from store import InvalidInput, Memory, NotFound

MEMORY_KINDS = ("fact", "preference", "instruction", "note")
MAX_MEMORY_CHARS = 2_000


def format_memory(mem: Memory) -> str:
    """``[id] (kind, YYYY-MM-DD) content``: one line the model can quote an id from."""
    day = time.strftime("%Y-%m-%d", time.gmtime(mem.created_at / 1000)) if mem.created_at else "?"
    return f"[{mem.sid}] ({mem.kind}, {day}) {mem.content}"


class MemorySaveTool(Tool):
    """Store one durable fact about the user (exact duplicates are recognised, not stored twice)."""

    name = "memory_save"
    description = (
        "Remember one durable fact about the user for future conversations (a preference, a name, "
        "a standing instruction). One short self-contained sentence per call."
    )
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "content": {
                "type": "string",
                "description": "The fact, as one self-contained sentence.",
                "minLength": 1,
                "maxLength": MAX_MEMORY_CHARS,
            },
            "kind": {"type": "string", "enum": list(MEMORY_KINDS), "description": "Default: fact."},
        },
        "required": ["content"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        try:
            mem, created = await ctx.store.memories.add(
                ctx.scope,
                str(args["content"]),
                kind=str(args.get("kind", "fact")),
                source_conversation_id=ctx.conversation_id,
                source_channel=ctx.channel,
            )
        except InvalidInput as exc:
            raise ToolError(f"memory not saved: {exc}") from None
        if not created:
            return ToolResult(f"already remembered (duplicate, nothing added): {format_memory(mem)}")
        return ToolResult(f"saved: {format_memory(mem)}")


class MemorySearchTool(Tool):
    """Find stored memories by words; an empty query lists the most recent ones."""

    name = "memory_search"
    description = (
        "Search what you remember about the user. Returns matching memories with their ids, most "
        "relevant first; an empty query lists the most recent memories."
    )
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "Words to look for.", "maxLength": 500},
            "limit": {"type": "integer", "minimum": 1, "maximum": 50, "description": "Default 10."},
        },
        "required": ["query"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        query = str(args["query"]).strip()
        limit = int(args.get("limit", 10))
        if query:
            found = await ctx.store.memories.search(ctx.scope, query, limit=limit)
        else:
            found = (await ctx.store.memories.list(ctx.scope, limit=limit)).items
        if not found:
            return ToolResult(f"no memories match {query!r}" if query else "no memories stored yet")
        lines = [format_memory(m) for m in found]
        return ToolResult(f"{len(found)} memories:\n" + "\n".join(lines))


class MemoryForgetTool(Tool):
    """Delete one memory by id (as shown by memory_search)."""

    name = "memory_forget"
    description = "Forget (delete) one memory by its id, as shown by memory_search."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"id": {"type": "string", "description": "The memory id.", "maxLength": 64}},
        "required": ["id"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        sid = str(args["id"]).strip().strip("[]")
        try:
            mem = await ctx.store.memories.get(ctx.scope, sid)
            await ctx.store.memories.delete(ctx.scope, sid)
        except (NotFound, InvalidInput):
            # A foreign id answers exactly like a missing or malformed one.
            raise ToolError(f"no memory with id {sid!r}; use memory_search to find ids") from None
        return ToolResult(f"forgotten: {format_memory(mem)}")


def memory_tools() -> list[Tool]:
    return [MemorySaveTool(), MemorySearchTool(), MemoryForgetTool()]
