"""The waiting line: one self-erasing terminal line shown until a reply's first token arrives.

Models may take seconds before their first token, and the provider may be retried meanwhile; without a
sign of life the terminal looks hung. :class:`WaitLine` draws ``⠋ waiting for gpt-4o-mini · 3 s`` (or
``retrying (2/3) · <reason>``) on the current line with a carriage return, animates it on
:meth:`tick`, and erases it (``CR`` + erase-to-end-of-line) before anything else is written. It writes
raw text through a callable, so the chat (a prompt_toolkit output) and ``ask`` (stderr, only when that
is a terminal) share it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.events import Retrying

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
ERASE = "\r\x1b[K"
#: the longest label shown (a long retry reason would wrap and break the carriage return)
LABEL_CHARS = 70


def retry_label(event: Retrying) -> str:
    reason = " ".join(event.reason.split())
    return f"retrying ({event.attempt}/{event.max_retries}) · {reason}"


class WaitLine:
    """A status line that is either shown (and redrawn in place) or fully erased."""

    def __init__(self, write: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._write = write
        self._clock = clock
        self.label = ""
        self.active = False
        self._frame = 0
        self._since = 0.0

    def show(self, label: str) -> None:
        """Show (or relabel) the line; the elapsed time counts from the first ``show``."""
        if not self.active:
            self._since = self._clock()
            self.active = True
        self.label = label
        self._draw()

    def tick(self) -> None:
        """Advance the animation (called a few times a second while waiting)."""
        if self.active:
            self._frame += 1
            self._draw()

    def clear(self) -> None:
        if self.active:
            self.active = False
            self._write(ERASE)

    def _draw(self) -> None:
        elapsed = int(self._clock() - self._since)
        label = self.label if len(self.label) <= LABEL_CHARS else self.label[: LABEL_CHARS - 1] + "…"
        shown = f"{label} · {elapsed} s" if elapsed else label
        self._write(f"{ERASE}{FRAMES[self._frame % len(FRAMES)]} {shown}")
