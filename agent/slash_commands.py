"""The slash commands of SPEC 6, implemented once for every channel.

Each command answers one :class:`~agent.events.CommandOutput`: ``text`` for humans, ``data`` for
APIs. Bad arguments (a malformed or foreign id, an empty title) answer a clear line and change
nothing. Unknown commands answer the help text with ``ok=False``; they never reach the model.

The target conversation is the request's ``conversation_id`` when given, else the active one.
``/context NAME`` cannot switch a channel's scope from here: it validates the name and returns
``data={"context": NAME}`` for the channel to act on.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

from agent.events import CommandOutput
from config.errors import HeroError
from store import Conversation, InvalidInput, NotFound, validate_context

if TYPE_CHECKING:
    from agent.core import Agent, TurnRequest

log = structlog.get_logger()

HELP = """Commands:
/new [TITLE]      start a new conversation
/clear            the model forgets this conversation's earlier turns (archived, memories kept)
/list             your conversations in this context
/switch ID        continue another conversation
/rename TITLE     rename this conversation
/delete           delete this conversation for good
/context [NAME]   show or switch the context (workspace)
/memory           what I remember about you
/forget ID        forget one memory
/compact          summarise the older turns of this conversation now
/model [NAME]     show the models, or switch this conversation's model
/status           model, provider, context, conversation and store in use
/stop             stop the running answer
/help             this help"""
GREETING = (
    "Hello! I am your assistant. Just write to me; I keep our conversations and remember what "
    "matters across them. /help lists the commands."
)

LIST_LIMIT = 20
MEMORY_LIMIT = 50

Handler = Callable[["Agent", "TurnRequest", str], Awaitable[CommandOutput]]


def parse(text: str) -> tuple[str, str]:
    """``"/switch@bot  0a2 "`` -> ``("switch", "0a2")``."""
    head, _, rest = text.strip().partition(" ")
    return head[1:].split("@", 1)[0].lower(), rest.strip()


async def run_command(agent: Agent, req: TurnRequest) -> CommandOutput:
    name, arg = parse(req.text)
    handler = COMMANDS.get(name)
    if handler is None:
        return CommandOutput(name, f"Unknown command /{name}.\n\n{HELP}", ok=False)
    try:
        return await handler(agent, req, arg)
    except HeroError as exc:
        if not exc.user_safe:
            log.warning("command.failed", command=name, error_type=type(exc).__name__)
        return CommandOutput(name, exc.user_message, ok=False)


async def _target(agent: Agent, req: TurnRequest) -> Conversation | None:
    if req.conversation_id:
        return await agent.store.conversations.get(req.scope, req.conversation_id)
    return await agent.conversations.active(req.scope, channel=req.channel, create=False)


def _conv_data(conv: Conversation, active: str = "") -> dict[str, Any]:
    return {
        "id": conv.sid,
        "title": conv.title,
        "message_count": conv.message_count,
        "updated_at": conv.updated_at,
        "last_channel": conv.last_channel,
        "active": conv.sid == active,
    }


def _about(command: str, text: str, conv: Conversation) -> CommandOutput:
    """A command's answer about one conversation, which the channel then shows as its current one."""
    return CommandOutput(
        command, text, data={"conversation": _conv_data(conv, conv.sid)}, conversation_id=conv.sid
    )


def _label(conv: Conversation) -> str:
    return f"{conv.sid} {conv.title!r}" if conv.title else conv.sid


async def _new(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    conv = await agent.conversations.new(req.scope, channel=req.channel, title=arg, is_group=req.is_group)
    return _about("new", f"Started a new conversation ({_label(conv)}).", conv)


async def _clear(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    conv = await _target(agent, req)
    if conv is None:
        return CommandOutput("clear", "There is no conversation to clear yet.")
    conv = await agent.conversations.clear(req.scope, conv.sid)
    return _about(
        "clear",
        "Cleared: I no longer see the earlier turns of this conversation "
        "(they stay archived, and what was worth remembering is kept).",
        conv,
    )


async def _list(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    page = await agent.store.conversations.list(req.scope, limit=LIST_LIMIT)
    active = await agent.conversations.active(req.scope, channel=req.channel, create=False)
    active_id = active.sid if active else ""
    if not page.items:
        return CommandOutput("list", "No conversations yet.", data={"conversations": []})
    lines = []
    for conv in page.items:
        mark = "*" if conv.sid == active_id else " "
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(conv.updated_at / 1000))
        lines.append(
            f"{mark} {conv.sid}  {conv.title or '(untitled)'}  [{conv.message_count} messages, {when}]"
        )
    return CommandOutput(
        "list",
        "\n".join(lines),
        conversation_id=active_id,
        data={"conversations": [_conv_data(c, active_id) for c in page.items]},
    )


async def _switch(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    if not arg:
        return CommandOutput("switch", "Usage: /switch ID (see /list).", ok=False)
    try:
        await agent.conversations.set_active(req.scope, arg)
    except InvalidInput:
        raise NotFound("conversation", arg) from None  # a malformed id names no conversation either
    conv = await agent.store.conversations.get(req.scope, arg)
    return _about("switch", f"Switched to {_label(conv)}.", conv)


async def _rename(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    if not arg:
        return CommandOutput("rename", "Usage: /rename TITLE.", ok=False)
    conv = await _target(agent, req)
    if conv is None:
        return CommandOutput("rename", "There is no conversation to rename yet.", ok=False)
    conv = await agent.store.conversations.rename(req.scope, conv.sid, arg)
    return _about("rename", f"Renamed to {conv.title!r}.", conv)


async def _delete(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    conv = await _target(agent, req)
    if conv is None:
        return CommandOutput("delete", "There is no conversation to delete.", ok=False)
    await agent.delete_conversation(req.scope, conv.sid)
    return CommandOutput(
        "delete",
        f"Deleted conversation {_label(conv)} for good. Your next message starts a new one.",
        data={"deleted": conv.sid},
    )


async def _context(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    if not arg:
        return CommandOutput(
            "context",
            f"Current context: {req.scope.context}",
            data={"context": req.scope.context, "changed": False},
        )
    name = validate_context(arg)
    return CommandOutput("context", f"Switched to context {name}.", data={"context": name, "changed": True})


async def _memory(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    page = await agent.store.memories.list(req.scope, limit=MEMORY_LIMIT)
    items = [
        {"id": m.sid, "content": m.content, "kind": m.kind, "created_at": m.created_at} for m in page.items
    ]
    if not items:
        return CommandOutput("memory", "I do not remember anything about you yet.", data={"memories": []})
    lines = [f"{m['id']}  {m['content']}" for m in items]
    return CommandOutput(
        "memory",
        "What I remember (forget one with /forget ID):\n" + "\n".join(lines),
        data={"memories": items},
    )


async def _forget(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    if not arg:
        return CommandOutput("forget", "Usage: /forget ID (see /memory).", ok=False)
    try:
        await agent.store.memories.delete(req.scope, arg)
    except InvalidInput:
        raise NotFound("memory", arg) from None  # a malformed id names no memory either
    return CommandOutput("forget", f"Forgot memory {arg}.", data={"forgotten": arg})


async def _compact(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    conv = await _target(agent, req)
    if conv is None:
        return CommandOutput("compact", "There is no conversation to compact yet.")
    done = await agent.conversations.compact(req.scope, conv.sid, channel=req.channel)
    text = "Compacted: the older turns are now a summary." if done else "Nothing to compact yet."
    return CommandOutput("compact", text, data={"compacted": done}, conversation_id=conv.sid)


async def _stop(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    stopped = await agent.stop_turn(req.scope, req.conversation_id)
    return CommandOutput(
        "stop",
        "Stopped." if stopped else "Nothing is running.",
        data={"stopped": stopped},
        conversation_id=req.conversation_id or "",
    )


async def _model(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    settings = agent.settings
    models = settings.models
    if not arg:
        conv = await _target(agent, req)
        current = settings.model_for(conv.model if conv else "")
        lines = [f"{m} (in use)" if m == current else m for m in models]
        return CommandOutput(
            "model",
            "Models (switch with /model NAME):\n" + "\n".join(lines),
            data={"models": list(models), "model": current},
            conversation_id=conv.sid if conv else "",
        )
    if arg not in models:
        return CommandOutput("model", f"Unknown model {arg!r}. Configured: {', '.join(models)}.", ok=False)
    conv = await _target(agent, req)
    if conv is None:
        conv = await agent.conversations.new(req.scope, channel=req.channel, is_group=req.is_group)
    # the configured default is stored as "" so the conversation follows a change of llm.model
    conv = await agent.store.conversations.set_model(
        req.scope, conv.sid, "" if arg == settings.llm.model else arg
    )
    agent.window.forget(req.scope, conv.sid)  # its cached conversation names the model it had
    return CommandOutput(
        "model",
        f"This conversation now uses {arg}.",
        data={"model": arg, "conversation": _conv_data(conv, conv.sid)},
        conversation_id=conv.sid,
    )


async def _status(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    settings = agent.settings
    conv = await _target(agent, req)
    model = settings.model_for(conv.model if conv else "")
    where = urlsplit(settings.llm.base_url)
    host = f"{where.hostname}:{where.port}" if where.port else str(where.hostname or "")
    data: dict[str, Any] = {
        "model": model,
        "provider": settings.llm.provider,
        "provider_host": host,
        "context": req.scope.context,
        "user": req.scope.user_id,
        "conversation": _conv_data(conv, conv.sid) if conv else None,
        "store": agent.store.engine.name,
    }
    shown = f"{conv.sid} {conv.title!r}" if conv and conv.title else conv.sid if conv else "none yet"
    count = f" ({conv.message_count} messages)" if conv else ""
    text = "\n".join(
        [
            f"Model: {model}",
            f"Provider: {settings.llm.provider} at {host}",
            f"Context: {req.scope.context} (you are {req.scope.user_id})",
            f"Conversation: {shown}{count}",
            f"Store: {agent.store.engine.name}",
        ]
    )
    return CommandOutput("status", text, data=data, conversation_id=conv.sid if conv else "")


async def _start(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    """Telegram's first message (``/start``): a greeting instead of "unknown command"."""
    return CommandOutput("start", GREETING)


async def _help(agent: Agent, req: TurnRequest, arg: str) -> CommandOutput:
    return CommandOutput("help", HELP, data={"commands": sorted(COMMANDS)})


COMMANDS: dict[str, Handler] = {
    "new": _new,
    "clear": _clear,
    "list": _list,
    "switch": _switch,
    "rename": _rename,
    "delete": _delete,
    "context": _context,
    "memory": _memory,
    "forget": _forget,
    "compact": _compact,
    "model": _model,
    "status": _status,
    "stop": _stop,
    "start": _start,
    "help": _help,
}
