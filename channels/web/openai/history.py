"""Which conversation a stateless OpenAI client's request continues, from the history it sends.

OpenAI clients (the SDKs, LangChain, litellm, ``llm chat``) keep no server-side state: every request
carries the whole conversation so far. The rule, in order:

1. ``X-Hero-Conversation: <id>`` names the conversation (it must exist in the caller's scope: else 404);
2. else, when the request has messages before its last user message, their **visible history** -- the
   ``user`` and ``assistant`` texts, in order (system and developer messages, tool results,
   assistant messages with ``tool_calls`` and assistant messages without text do not count), each
   with line endings made ``\\n`` and trailing whitespace removed from every line and from the end --
   is digested (:func:`extend`) and looked up among the caller's conversations in this context by
   their stored ``tail_digest`` (one indexed read, ``store.conversations.find_by_tail_digest``); the
   most recently updated one with that digest is continued;
3. else a new conversation is started, titled from the first user message of the request.

The digest is a chain: ``sha256(previous digest, role, text)`` per message, seeded with the request's
``user`` field, so each ``user`` value is its own namespace. After each completed turn the
conversation's ``tail_digest`` becomes the chain extended by the turn's user text and the answer the
client got, so the client's next request (its history now ending with that answer) matches it. An
edited or regenerated history (a fork) digests differently and starts a new conversation; a turn
continued elsewhere (the web page) leaves the digest behind, and the next API request starts anew.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from channels.web.errors import ApiError

SEED = "hero-agent/openai-history/1"
#: the roles whose text the client saw and sends back
VISIBLE_ROLES = ("user", "assistant")


def normalise(text: str) -> str:
    """Line endings as ``\\n``; trailing whitespace off every line and off the end."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).rstrip()


def seed(namespace: str) -> str:
    return hashlib.sha256(f"{SEED}\x00{namespace}".encode()).hexdigest()


def extend(digest: str, items: Iterable[tuple[str, str]]) -> str:
    """The chain ``digest`` extended by ``(role, text)`` items."""
    for role, text in items:
        digest = hashlib.sha256(f"{digest}\x00{role}\x00{normalise(text)}".encode()).hexdigest()
    return digest


def text_of(content: Any) -> str:
    """A message's text: a string, or the ``text`` parts of a list of parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(t for t in texts if isinstance(t, str))
    return ""


def visible_history(messages: Sequence[Any]) -> list[tuple[str, str]]:
    """The ``(role, text)`` pairs before the last user message that count for the match."""
    users = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"]
    last_user = users[-1] if users else 0
    out: list[tuple[str, str]] = []
    for msg in messages[:last_user]:
        if not isinstance(msg, dict):
            raise ApiError(400, "invalid_messages", "every message must be an object", param="messages")
        role = msg.get("role")
        if role not in VISIBLE_ROLES:
            continue
        text = text_of(msg.get("content"))
        if role == "assistant" and (msg.get("tool_calls") or not normalise(text)):
            continue  # a tool-call step (client tools), even with text: tool traffic
        out.append((str(role), text))
    return out


def title_from(history: Sequence[tuple[str, str]], last_text: str) -> str:
    """A new conversation's title: the first line of its first user message (at most 60 characters)."""
    first = next((text for role, text in history if role == "user"), last_text)
    line = first.strip().splitlines()[0][:60] if first.strip() else ""
    return line if line.isprintable() else ""
