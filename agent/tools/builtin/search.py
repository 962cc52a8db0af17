"""Built-in tool ``search_conversations``: the user's earlier messages, in the turn's scope only.

The scope is this context and this user (or this group in a group chat). It leaves out what the
model already sees: the current conversation's messages after its ``/clear`` boundary (turns archived
by ``/clear`` remain searchable). Only user and assistant messages are searched; tool output is not.
"""

from __future__ import annotations

import re
import time
from typing import Any

from agent.tools.base import Tool, ToolCaller, ToolError, ToolResult
from store import MAX_LIMIT, InvalidInput, Message, NotFound

SNIPPET_CHARS = 240
_WORD_RE = re.compile(r"\w+", re.UNICODE)


class SearchConversationsTool(Tool):
    """Find earlier messages of this user in this context, with conversation ids, titles and dates."""

    name = "search_conversations"
    description = (
        "Search the user's earlier conversations (in this context) for messages containing words. "
        "Returns snippets with the conversation id, title and date, most relevant first."
    )
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "description": "Words to look for.",
                "minLength": 1,
                "maxLength": 500,
            },
            "limit": {"type": "integer", "minimum": 1, "maximum": 50, "description": "Default 10."},
        },
        "required": ["query"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        query = str(args["query"]).strip()
        limit = int(args.get("limit", 10))
        if not _WORD_RE.search(query):
            raise ToolError("the query needs at least one word")
        visible_from = await _visible_floor(ctx)
        # Ask for more than needed: the messages the model already sees are filtered out below.
        found = await ctx.store.messages.search(ctx.scope, query, limit=min(MAX_LIMIT, limit * 4 + 20))
        hits = [
            m
            for m in found
            if m.role in ("user", "assistant")
            and not (m.conversation_id == ctx.conversation_id and m.seq > visible_from)
        ][:limit]
        if not hits:
            return ToolResult(f"no earlier messages match {query!r}")
        titles = await _titles(ctx, {m.conversation_id for m in hits})
        lines = [
            f'- conversation {m.conversation_id} "{titles.get(m.conversation_id, "")}" '
            f"[{_when(m)}{', ' + m.channel if m.channel else ''}] {m.role}: {snippet(m.content, query)}"
            for m in hits
        ]
        return ToolResult(f"{len(hits)} matching messages:\n" + "\n".join(lines))


async def _visible_floor(ctx: ToolCaller) -> int:
    """The seq after which the current conversation's messages are in the model's context already."""
    try:
        conv = await ctx.store.conversations.get(ctx.scope, ctx.conversation_id)
    except (NotFound, InvalidInput):  # no stored conversation (yet): nothing is visible
        return 0
    return conv.clear_seq


async def _titles(ctx: ToolCaller, ids: set[str]) -> dict[str, str]:
    titles: dict[str, str] = {}
    for sid in ids:
        try:
            titles[sid] = (await ctx.store.conversations.get(ctx.scope, sid)).title or "untitled"
        except NotFound:  # deleted since the message was indexed
            titles[sid] = "deleted"
    return titles


def _when(msg: Message) -> str:
    ms = msg.timestamp or msg.created_at
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000)) if ms else "undated"


def snippet(content: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """About ``width`` characters of ``content`` around the first query word found, on one line."""
    flat = " ".join(content.split())
    if len(flat) <= width:
        return flat
    lower = flat.lower()
    positions = [p for w in _WORD_RE.findall(query.lower()) if (p := lower.find(w)) >= 0]
    at = min(positions) if positions else 0
    start = max(0, min(at - width // 3, len(flat) - width))
    end = start + width
    return ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")
