"""What a resumed chat shows first: the last few exchanges of the conversation it continues.

Without it, ``hero-agent chat`` resumes the active conversation silently and the user cannot tell
what the model remembers. Only what a person said and read is shown (user messages and the
assistant's text, not tool traffic or compaction summaries); long messages are cut to a few lines.
"""

from __future__ import annotations

from collections.abc import Iterable

from channels.terminal.printer import Screen
from channels.terminal.render import render_markdown
from store import Message, MessageStatus, Role


def last_exchanges(newest_first: Iterable[Message], turns: int) -> list[Message]:
    """The messages of the last ``turns`` exchanges (each starts with a user message), oldest first."""
    picked: list[Message] = []
    users = 0
    for msg in newest_first:
        if msg.message_type or not msg.content.strip():
            continue
        if msg.role == Role.USER:
            if users == turns:
                break
            users += 1
        elif msg.role != Role.ASSISTANT:
            continue
        picked.append(msg)
    picked.reverse()
    while picked and picked[0].role != Role.USER:  # an answer whose question is not shown
        picked.pop(0)
    return picked


def elide(text: str, max_lines: int) -> str:
    lines = text.strip().splitlines()
    if len(lines) <= max_lines:
        return "\n".join(lines)
    return "\n".join([*lines[:max_lines], f"… ({len(lines) - max_lines} more lines)"])


def show_recap(screen: Screen, messages: list[Message], max_lines: int) -> None:
    """Print the exchanges: the user's lines dimmed after ``you >``, the answers as markdown."""
    if not messages:
        return
    screen.line("class:info", "── earlier in this conversation ──")
    for msg in messages:
        text = elide(msg.content, max_lines)
        if msg.role == Role.USER:
            screen.line("class:info", f"you > {text}")
            continue
        screen.write(render_markdown(text + "\n"))
        if msg.status == MessageStatus.INTERRUPTED:
            screen.line("class:notice", "⏹ interrupted")
        elif msg.status == MessageStatus.ERROR:
            screen.line("class:error", "✗ this reply failed")
    screen.line("class:info", "──")
