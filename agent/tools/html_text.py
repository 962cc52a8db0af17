"""Readable text out of HTML with the standard library's parser (no extra dependency).

Scripts, styles, navigation and other non-content elements are dropped; headings keep a ``#`` marker,
list items a ``-``; block elements become line breaks; runs of whitespace collapse. The page title
comes first. Link text is kept (not the addresses: they would crowd out the content).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

#: elements whose whole content is not page text
_SKIP = frozenset({"script", "style", "nav", "noscript", "template", "svg", "iframe", "head", "object"})
#: elements that end a line of text
_BLOCK = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tr",
        "ul",
    }
)
#: blocks whose end needs no line break of its own (the next item or row starts one)
_CELLS = frozenset({"li", "dt", "dd", "br", "tr"})
#: void elements never get an end tag, so they must not open a skipped region
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title_parts: list[str] = []
        self.parts: list[str] = []
        self._skip_depth = 0
        self._in_title = False
        self._in_pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
            return
        if tag in _SKIP and tag not in _VOID:
            self._skip_depth += 1
            return
        if self._skip_depth:
            return
        if tag in _BLOCK:
            self.parts.append("\n")
        if tag == "pre":
            self._in_pre += 1
        if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self.parts.append("#" * int(tag[1]) + " ")
        elif tag == "li":
            self.parts.append("- ")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self._skip_depth and tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
            return
        if tag in _SKIP and tag not in _VOID:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if self._skip_depth:
            return
        if tag == "pre":
            self._in_pre = max(0, self._in_pre - 1)
        if tag in _BLOCK and tag not in _CELLS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skip_depth:
            # Preformatted text keeps its line breaks; elsewhere a newline is just a space.
            self.parts.append(data if self._in_pre else data.replace("\n", " "))


def html_to_text(html: str) -> tuple[str, str]:
    """``(title, text)`` of an HTML document; malformed markup is handled as well as it parses."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    title = _SPACES.sub(" ", " ".join(parser.title_parts).replace("\n", " ")).strip()
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(parser.parts).split("\n"))
    text = "\n".join(lines)
    # Collapse the empty lines that nested blocks leave behind, keeping at most one blank line.
    text = _BLANK_LINES.sub("\n\n", text).strip()
    return title, text
