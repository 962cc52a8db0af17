"""``hero-agent chat [--context C] [--user U] [--conversation ID | --new]``: the interactive chat.

Logs never go to the terminal during a chat (they would garble the prompt): they are appended as JSON
lines to ``<store.path>/logs/cli.log`` at the configured level.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

import anyio

from config import Settings
from config.logging import configure_logging
from config.redact import secret_values
from store import validate_context


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="interactive terminal chat",
        description="Chat in the terminal. Enter sends, Alt-Enter inserts a newline, Ctrl-C cancels a "
        "reply, Ctrl-D exits.",
    )
    add_scope_arguments(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--conversation", metavar="ID", help="switch to this conversation")
    which.add_argument("--new", action="store_true", help="start a new conversation")
    parser.set_defaults(handler=run)


def add_scope_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--context", metavar="C", help="the context (default: agent.default_context)")
    parser.add_argument("--user", metavar="U", help="the user (default: the OS user name)")


def scope_of(args: argparse.Namespace, settings: Settings) -> tuple[str, str]:
    """(context, user) from the arguments and the settings. The context is checked here (the store's
    reserved context is no user's); the user when the Scope is built."""
    return validate_context(args.context or settings.agent.default_context), args.user or settings.os_user


def log_file(settings: Settings) -> Path:
    return settings.store.path / "logs" / "cli.log"


def _open_log(settings: Settings) -> TextIO:
    path = log_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", encoding="utf-8", buffering=1)


def run(args: argparse.Namespace, settings: Settings) -> int:
    with _open_log(settings) as log_stream:
        configure_logging(
            settings.logging, stream=log_stream, force_json=True, secrets=secret_values(settings)
        )
        return anyio.run(_chat, args, settings)


async def _chat(args: argparse.Namespace, settings: Settings) -> int:
    # imported here: `hero-agent --help` and `config check` need not load the agent and the store
    from prompt_toolkit.history import FileHistory  # noqa: PLC0415

    from agent.factory import open_agent  # noqa: PLC0415
    from channels.terminal.session import CliChat, history_path  # noqa: PLC0415
    from store import open_store  # noqa: PLC0415

    context, user = scope_of(args, settings)
    async with open_store(settings) as store, open_agent(settings, store) as agent:
        path = history_path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        chat = CliChat(settings, agent, user=user, context=context, history=FileHistory(str(path)))
        try:
            await chat.start(conversation_id=args.conversation, new=args.new)
            await chat.run()
        finally:
            await chat.stop()
    return 0
