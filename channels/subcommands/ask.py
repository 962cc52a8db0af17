"""``hero-agent ask [--context C] [--user U] [--conversation ID] TEXT``: one turn, for scripts.

The answer streams to stdout, logs go to stderr, and the exit code says whether the turn (or the
command: ``ask /clear``) succeeded. ``TEXT`` ``-`` reads the message from stdin.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from agent.events import CommandOutput, Done, TextDelta, TurnFailed
from channels.subcommands.chat import add_scope_arguments, scope_of
from config import Settings

CHANNEL = "cli"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("ask", help="one turn: the answer on stdout, exit code says success")
    add_scope_arguments(parser)
    parser.add_argument(
        "--conversation", metavar="ID", help="continue this conversation (default: the active one)"
    )
    parser.add_argument("text", metavar="TEXT", help="the message or /command; - reads stdin")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip():
        print("hero-agent: error: the message is empty", file=sys.stderr)
        return 2
    return anyio.run(_ask, args, settings, text)


async def _ask(args: argparse.Namespace, settings: Settings, text: str) -> int:
    from agent.core import TurnRequest  # noqa: PLC0415
    from agent.factory import open_agent  # noqa: PLC0415
    from channels.terminal.printer import closing_events  # noqa: PLC0415
    from store import Scope, open_store  # noqa: PLC0415

    context, user = scope_of(args, settings)
    scope = Scope(context, user)
    request = TurnRequest(scope=scope, channel=CHANNEL, text=text, conversation_id=args.conversation)
    ok = False
    async with (
        open_store(settings) as store,
        open_agent(settings, store) as agent,
        closing_events(agent.handle(request)) as events,
    ):
        async for event in events:
            ok = _render(event, ok)
    return 0 if ok else 1


def _render(event: object, ok: bool) -> bool:
    """Write one event; answers whether the run counts as a success so far."""
    out = sys.stdout
    if isinstance(event, TextDelta):
        out.write(event.text)
        out.flush()
    elif isinstance(event, Done):
        if not event.text.endswith("\n"):
            out.write("\n")
        out.flush()
        return True
    elif isinstance(event, TurnFailed):
        out.flush()
        print(f"hero-agent: error: {event.message}", file=sys.stderr)
        return False
    elif isinstance(event, CommandOutput):
        out.write(event.text.rstrip("\n") + "\n")
        out.flush()
        if not event.ok:
            print(f"hero-agent: /{event.command} failed", file=sys.stderr)
        return event.ok
    return ok
