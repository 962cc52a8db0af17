"""Rendering turn events in the terminal: streamed markdown, compact tool lines, errors.

Writes go to a prompt_toolkit :class:`Output` with :func:`print_formatted_text`, flushed per chunk so
tokens appear as they come. No prompt is active while a reply streams, so nothing needs
``patch_stdout`` here; the prompt is redrawn afterwards.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prompt_toolkit import print_formatted_text
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.output import Output
from prompt_toolkit.styles import Style

from agent.events import (
    CommandOutput,
    Done,
    Retrying,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnEvent,
    TurnFailed,
    TurnStarted,
    UsageInfo,
)
from channels.terminal.render import Fragment, MarkdownStream, render_markdown
from channels.terminal.waiting import WaitLine, retry_label

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
#: indent of a failed tool's reason under its line
REASON_INDENT = "    "


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

    def raw(self, text: str) -> None:
        """Control sequences and text as they are (the waiting line draws itself in place)."""
        self.output.write_raw(text)
        self.output.flush()

    def columns(self) -> int:
        return max(20, self.output.get_size().columns)


class ReplyPrinter:
    """Renders one turn's (or one command's) events on a :class:`Screen`.

    While the model has not answered yet (after the turn starts, after tools finish) a waiting line
    shows "waiting for <model>", or "retrying (n/max)" when the provider is retried; any other output
    erases it first.
    """

    def __init__(self, screen: Screen, *, model: str = "the model") -> None:
        self.screen = screen
        self.markdown = MarkdownStream()
        self.conversation_id = ""
        self.failed = False
        self.command: CommandOutput | None = None
        self.waiting_label = f"waiting for {model}"
        self.wait = WaitLine(screen.raw)

    def tick(self) -> None:
        self.wait.tick()

    def _wait(self, label: str) -> None:
        self.screen.ensure_newline()
        self.wait.show(label)

    def handle(self, event: TurnEvent) -> None:
        if isinstance(event, Retrying):
            self._end_text()
            self._wait(retry_label(event))
            return
        self.wait.clear()
        match event:
            case TurnStarted(conversation_id=cid):
                self.conversation_id = cid
                self._wait(self.waiting_label)
            case TextDelta(text=text):
                self.screen.write(self.markdown.feed(text))
            case ToolStarted(name=name, arguments=arguments):
                self._end_text()
                self.screen.line("class:tool", f"  ⚙ {name} {_short(arguments)}…")
            case ToolFinished(name=name, ok=ok, summary=summary, duration_ms=ms):
                if ok:
                    self.screen.line("class:tool.ok", f"  ✓ {name} ({ms:.0f} ms)")
                else:
                    self.screen.line("class:tool.fail", f"  ✗ {name} failed ({ms:.0f} ms):")
                    for line in wrap_reason(summary, self.screen.columns()):
                        self.screen.line("class:tool.fail", line)
                self._wait(self.waiting_label)
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
        self.wait.clear()
        self._end_text()
        self.screen.line("class:notice", "⏹ interrupted")

    def _end_text(self) -> None:
        self.screen.write(self.markdown.flush())


def wrap_reason(reason: str, columns: int) -> list[str]:
    """A failed tool's reason, whole, wrapped to the terminal under its tool line."""
    return textwrap.wrap(
        reason or "(no reason given)",
        width=columns - 1,
        initial_indent=REASON_INDENT,
        subsequent_indent=REASON_INDENT,
        break_long_words=True,
        break_on_hyphens=False,
    )


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
