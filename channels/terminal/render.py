"""Light, streaming markdown for the terminal: readable without a markdown library.

The model's reply arrives in arbitrary chunks, so :class:`MarkdownStream` styles text as it streams:
``# headings`` bold, ``**bold**`` bold (markers hidden), inline ``code`` and fenced code blocks in the
code style (fence lines dimmed), ``- item`` / ``* item`` bullets as ``•``. A few characters that might
start a marker (a lone ``*`` or backtick at the end of a chunk, the start of a line) are held back
until the next chunk decides them; :meth:`MarkdownStream.flush` releases the rest.
"""

from __future__ import annotations

import re

Fragment = tuple[str, str]

STYLE_TEXT = ""
STYLE_BOLD = "class:md.bold"
STYLE_HEADING = "class:md.heading"
STYLE_CODE = "class:md.code"
STYLE_FENCE = "class:md.fence"

_HEADING = re.compile(r"#{1,6} ")
_BULLET = re.compile(r"( *)[-*] ")
_LINE_START_LIMIT = 8  # longest prefix needed to decide a line start ("###### ", "```", "  - ")


class MarkdownStream:
    """Feed chunks, get ``(style, text)`` fragments ready to print as they come."""

    def __init__(self) -> None:
        self._pending = ""
        self._line_start = True
        self._in_fence = False
        self._heading = False
        self._bold = False
        self._code = False

    def feed(self, chunk: str) -> list[Fragment]:
        self._pending += chunk
        return self._drain(final=False)

    def flush(self) -> list[Fragment]:
        out = self._drain(final=True)
        self._line_start, self._heading, self._bold, self._code = True, False, False, False
        return out

    def _style(self) -> str:
        if self._in_fence or self._code:
            return STYLE_CODE
        if self._heading:
            return STYLE_HEADING
        return STYLE_BOLD if self._bold else STYLE_TEXT

    def _drain(self, *, final: bool) -> list[Fragment]:
        out: list[Fragment] = []
        text = self._pending
        i = 0
        plain_start = 0

        def emit_plain(end: int) -> None:
            if end > plain_start:
                _append(out, self._style(), text[plain_start:end])

        while i < len(text):
            if self._line_start:
                line_end = text.find("\n", i)
                rest = text[i:] if line_end < 0 else text[i : line_end + 1]
                if rest.startswith("```"):
                    if line_end < 0 and not final:
                        break  # wait for the whole fence line (it may carry a language name)
                    self._in_fence = not self._in_fence
                    _append(out, STYLE_FENCE, rest)
                    i += len(rest)
                    plain_start = i
                    self._line_start = rest.endswith("\n")
                    continue
                if not final and line_end < 0 and len(rest) < _LINE_START_LIMIT and _undecided(rest):
                    break
                self._line_start = False
                if not self._in_fence:
                    if m := _HEADING.match(rest):
                        self._heading = True
                        i += m.end()
                    elif m := _BULLET.match(rest):
                        _append(out, STYLE_TEXT, f"{m.group(1)}• ")
                        i += m.end()
                plain_start = i
                continue
            ch = text[i]
            if ch == "\n":
                emit_plain(i + 1)
                i += 1
                plain_start = i
                self._line_start, self._heading, self._code = True, False, False
                continue
            if self._in_fence:
                i += 1
                continue
            if ch == "`":
                emit_plain(i)
                self._code = not self._code
                i += 1
                plain_start = i
                continue
            if ch == "*" and not self._code:
                if i + 1 >= len(text) and not final:
                    break  # a lone "*" at the end: "**" or not, the next chunk tells
                if text.startswith("**", i):
                    emit_plain(i)
                    self._bold = not self._bold
                    i += 2
                    plain_start = i
                    continue
            i += 1
        emit_plain(i)
        self._pending = text[i:]
        return out


def _undecided(prefix: str) -> bool:
    """Could this start of a line still become a heading, fence or bullet?"""
    stripped = prefix.lstrip(" ")
    if not stripped:
        return True
    return bool(
        ("```".startswith(stripped) and prefix == stripped)
        or (set(stripped) <= {"#"} and prefix == stripped)
        or stripped in ("-", "*")
    )


def _append(out: list[Fragment], style: str, text: str) -> None:
    if not text:
        return
    if out and out[-1][0] == style:
        out[-1] = (style, out[-1][1] + text)
    else:
        out.append((style, text))


def render_markdown(text: str) -> list[Fragment]:
    """A whole text at once (command output)."""
    stream = MarkdownStream()
    return stream.feed(text) + stream.flush()


def plain(fragments: list[Fragment]) -> str:
    return "".join(text for _style, text in fragments)
