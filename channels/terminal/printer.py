"""Rendering turn events in the terminal: streamed markdown, compact tool lines, errors.

Writes go to a prompt_toolkit :class:`Output` with :func:`print_formatted_text`, flushed per chunk so
tokens appear as they come. No prompt is active while a reply streams, so nothing needs
``patch_stdout`` here; the prompt is redrawn afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prompt_toolkit import print_formatted_text
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.output import Output
from prompt_toolkit.styles import Style

from agent.events import (
    CommandOutput,
    Done,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnEvent,
    TurnFailed,
    TurnStarted,
    UsageInfo,
)
from channels.terminal.render import Fragment, MarkdownStream, render_markdown

STYLE = Style.from_dict(
    {
        "md.bold": "bold",
        "md.heading": "bold underline",
        "md.code": "ansicyan",
        "md.fence": "ansibrightblack",
        "tool": "ansibrightblack",
        "tool.ok": "ansigreen",
        "tool.fail": "ansired",
        "error": "ansired bold",
        "notice": "ansiyellow",
        "info": "ansibrightblack",
        "bottom-toolbar": "noreverse bg:ansibrightblack ansiwhite",
    }
)
ARGS_SHOWN = 60


class Screen:
    """Formatted writes to one terminal output."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.at_line_start = True

    def write(self, fragments: list[Fragment]) -> None:
        if not fragments:
            return
        print_formatted_text(FormattedText(fragments), end="", output=self.output, style=STYLE, flush=True)
        self.at_line_start = fragments[-1][1].endswith("\n")

    def line(self, style: str, text: str) -> None:
        """A whole line of its own, starting a new line first when needed."""
        self.ensure_newline()
        self.write([(style, text + "\n")])

    def ensure_newline(self) -> None:
        if not self.at_line_start:
            self.write([("", "\n")])


class ReplyPrinter:
    """Renders one turn's (or one command's) events on a :class:`Screen`."""

    def __init__(self, screen: Screen) -> None:
        self.screen = screen
        self.markdown = MarkdownStream()
        self.conversation_id = ""
        self.failed = False
        self.command: CommandOutput | None = None

    def handle(self, event: TurnEvent) -> None:
        match event:
            case TurnStarted(conversation_id=cid):
                self.conversation_id = cid
            case TextDelta(text=text):
                self.screen.write(self.markdown.feed(text))
            case ToolStarted(name=name, arguments=arguments):
                self._end_text()
                self.screen.line("class:tool", f"  ⚙ {name} {_short(arguments)}…")
            case ToolFinished(name=name, ok=ok, summary=summary, duration_ms=ms):
                if ok:
                    self.screen.line("class:tool.ok", f"  ✓ {name} ({ms:.0f} ms)")
                else:
                    self.screen.line("class:tool.fail", f"  ✗ {name}: {_short(summary)} ({ms:.0f} ms)")
            case UsageInfo():
                pass
            case Done(conversation_id=cid):
                self.conversation_id = cid or self.conversation_id
                self._end_text()
                self.screen.ensure_newline()
            case TurnFailed(message=message, conversation_id=cid):
                self.failed = True
                self.conversation_id = cid or self.conversation_id
                self._end_text()
                self.screen.line("class:error", f"✗ {message}")
            case CommandOutput():
                self.command = event
                self.failed = not event.ok
                self.conversation_id = event.conversation_id or self.conversation_id
                self.screen.write(render_markdown(event.text.rstrip("\n") + "\n") if event.text else [])

    def interrupted(self) -> None:
        """Ctrl-C cut the reply: the agent stored what streamed as an interrupted message."""
        self._end_text()
        self.screen.line("class:notice", "⏹ interrupted")

    def _end_text(self) -> None:
        self.screen.write(self.markdown.flush())


def _short(text: str) -> str:
    one_line = " ".join(text.split())
    if one_line in ("{}", ""):
        return ""
    return one_line if len(one_line) <= ARGS_SHOWN else one_line[: ARGS_SHOWN - 1] + "…"


@asynccontextmanager
async def closing_events(events: AsyncIterator[TurnEvent]) -> AsyncIterator[AsyncIterator[TurnEvent]]:
    """Iterate ``agent.handle(...)`` and close the generator deterministically, also on cancel, so the
    agent's cleanup (storing an interrupted reply) runs now and not at garbage collection."""
    try:
        yield events
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
