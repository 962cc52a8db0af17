"""``hero-agent ask [--context C] [--user U] [--conversation ID] TEXT``: one turn, for scripts.

stdout carries the answer and nothing else; the exit code says whether the turn (or the command:
``ask /clear``) succeeded. ``TEXT`` ``-`` reads the message from stdin.

stderr stays quiet so that scripts can keep it: logs are readable lines at warning and above (the
configured ``logging.level`` when it is stricter), and a failed turn is exactly one line,
``hero-agent: error: <reason>``; the agent's own warnings about that same failure (``llm.failed``,
``provider.retry``, ``provider.fallback``) are not repeated. ``--log-level`` shows every log at the
level asked for. On a terminal, stderr also shows a self-erasing waiting line ("retrying (2/3)")
until the first token; off a terminal it shows nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import anyio

from agent.events import (
    CommandOutput,
    Done,
    Retrying,
    TextDelta,
    ToolFinished,
    TurnEvent,
    TurnFailed,
    TurnStarted,
)
from channels.subcommands.chat import add_scope_arguments, scope_of
from channels.terminal.logs import SHOWN_EVENTS, quiet_logging
from channels.terminal.waiting import WaitLine, retry_label
from config import Settings
from config.logging import configure_logging
from config.redact import secret_values

CHANNEL = "cli"
TICK_S = 0.2


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
    logging_settings, hide = quiet_logging(settings.logging, getattr(args, "log_level", None))
    configure_logging(
        logging_settings, secrets=secret_values(settings), hidden_events=SHOWN_EVENTS if hide else ()
    )
    return anyio.run(_ask, args, settings, text)


async def _ask(args: argparse.Namespace, settings: Settings, text: str) -> int:
    from agent.core import TurnRequest  # noqa: PLC0415
    from agent.factory import open_agent  # noqa: PLC0415
    from channels.terminal.printer import closing_events  # noqa: PLC0415
    from store import Scope, open_store  # noqa: PLC0415

    context, user = scope_of(args, settings)
    scope = Scope(context, user)
    request = TurnRequest(scope=scope, channel=CHANNEL, text=text, conversation_id=args.conversation)
    answer = AnswerWriter(sys.stdout, sys.stderr, model=settings.llm.model)
    async with (
        open_store(settings) as store,
        open_agent(settings, store) as agent,
        closing_events(agent.handle(request)) as events,
        anyio.create_task_group() as tg,
    ):
        if answer.wait is not None:
            tg.start_soon(_animate, answer.wait)
        try:
            async for event in events:
                answer.handle(event)
        finally:
            answer.close()
            tg.cancel_scope.cancel()
    return 0 if answer.ok else 1


async def _animate(wait: WaitLine) -> None:
    while True:
        await anyio.sleep(TICK_S)
        wait.tick()


class AnswerWriter:
    """Writes one turn's events: the answer to ``out``; the error line and, when ``err`` is a
    terminal, the waiting line to ``err``. ``ok`` says whether the run counts as a success."""

    def __init__(self, out: TextIO, err: TextIO, *, model: str) -> None:
        self.out = out
        self.err = err
        self.ok = False
        self.waiting_label = f"waiting for {model}"
        self.wait = WaitLine(self._write_err) if _isatty(err) else None

    def _write_err(self, text: str) -> None:
        self.err.write(text)
        self.err.flush()

    def _show(self, label: str) -> None:
        if self.wait is not None:
            self.wait.show(label)

    def close(self) -> None:
        if self.wait is not None:
            self.wait.clear()

    def handle(self, event: TurnEvent) -> None:
        if isinstance(event, Retrying):
            self._show(retry_label(event))
            return
        self.close()
        out = self.out
        if isinstance(event, TurnStarted | ToolFinished):  # the model has not answered (again) yet
            self._show(self.waiting_label)
        elif isinstance(event, TextDelta):
            out.write(event.text)
            out.flush()
        elif isinstance(event, Done):
            if not event.text.endswith("\n"):
                out.write("\n")
            out.flush()
            self.ok = True
        elif isinstance(event, TurnFailed):
            out.flush()
            print(f"hero-agent: error: {event.message}", file=self.err)
            self.ok = False
        elif isinstance(event, CommandOutput):
            out.write(event.text.rstrip("\n") + "\n")
            out.flush()
            if not event.ok:
                print(f"hero-agent: /{event.command} failed", file=self.err)
            self.ok = event.ok


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
