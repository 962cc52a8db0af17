"""Slash-command completion for the chat prompt: the agent's shared commands plus ``/exit``."""

from __future__ import annotations

from collections.abc import Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from agent.slash_commands import HELP


def _commands_from_help(help_text: str) -> dict[str, str]:
    """The agent's help text is the one list of shared commands: ``/switch ID   continue ...``."""
    commands: dict[str, str] = {}
    for line in help_text.splitlines():
        if line.startswith("/"):
            usage, _, meta = line.partition("  ")
            commands[usage.split()[0]] = meta.strip()
    return commands


#: command -> one-line description (shown in the completion menu)
SLASH_COMMANDS: dict[str, str] = {**_commands_from_help(HELP), "/exit": "leave the chat (or Ctrl-D)"}


class SlashCompleter(Completer):
    """Completes the command name while the input is ``/`` plus a word (no space yet)."""

    def __init__(self, commands: dict[str, str] | None = None) -> None:
        self.commands = SLASH_COMMANDS if commands is None else commands

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/") or " " in text or "\n" in text:
            return
        for name, meta in self.commands.items():
            if name.startswith(text):
                yield Completion(name, start_position=-len(text), display_meta=meta)
