"""Telegram's HTML parse mode, as strictly as the Bot API applies it (for the fake Bot API).

Only the documented tags are allowed, tags must nest properly, ``<`` ``>`` ``&`` outside tags must be
escaped, and only the named entities ``&lt; &gt; &amp; &quot;`` (plus numeric ones) exist.
"""

from __future__ import annotations

import html
import re

ALLOWED = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "span",
    "tg-spoiler",
    "tg-emoji",
    "blockquote",
}
_TOKEN = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+=\"[^\"]*\")*)\s*>|&(#\d+|#x[0-9a-fA-F]+|"
    r"[a-zA-Z]+);|[<>&]"
)
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


class HTMLError(ValueError):
    """The markup would be rejected by Telegram (the message says why)."""


def visible_text(markup: str) -> str:
    """The text a user sees for ``markup``; raises :class:`HTMLError` where Telegram answers 400."""
    out: list[str] = []
    stack: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(markup):
        out.append(markup[pos : m.start()])
        pos = m.end()
        token = m.group(0)
        if m.group(2):
            closing, tag = m.group(1) == "/", m.group(2).lower()
            if tag not in ALLOWED:
                raise HTMLError(f'unsupported start tag "{tag}" at byte offset {m.start()}')
            if closing:
                if not stack or stack[-1] != tag:
                    raise HTMLError(f'can\'t find end tag corresponding to start tag "{tag}"')
                stack.pop()
            else:
                stack.append(tag)
        elif m.group(4):
            name = m.group(4)
            if name.startswith("#"):
                out.append(html.unescape(f"&{name};"))
            elif name in _NAMED:
                out.append(_NAMED[name])
            else:
                raise HTMLError(f'unsupported entity "&{name};"')
        else:
            raise HTMLError(f"unexpected character {token!r} at byte offset {m.start()}")
    out.append(markup[pos:])
    if stack:
        raise HTMLError(f'can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)
