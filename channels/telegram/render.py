"""Markdown -> Telegram HTML, and splitting long replies at sensible boundaries.

Telegram's HTML mode rejects unknown tags, unbalanced tags and bare ``<``/``&``, so the renderer escapes
everything first and only then turns a small Markdown subset into tags (bold, italic, strike, inline
code, fenced code blocks, links, headings, quotes). Its output is checked for balance; anything doubtful
falls back to escaped plain text, and the sender falls back again to plain text if Telegram still answers
"can't parse entities".

Telegram's limit of 4096 applies to the visible text after entity parsing, measured in UTF-16 code
units: ``<b>x</b>`` counts 1, a link counts its text and not its URL, most emoji count 2. Plain text is
split by that count directly (:func:`split_text`). A Markdown reply is cut on its *source* (so a cut can
never land inside a tag or an entity) at the longest prefix whose rendered visible text fits
(:func:`split_markdown`); a fenced code block cut in two is closed at the end of one part and reopened
in the next.
"""

from __future__ import annotations

import html
import re

#: Telegram's limit on the visible text of one message (UTF-16 code units)
TELEGRAM_LIMIT = 4096
#: where streamed plain text is cut: a little below the limit, so the formatted final text (which may
#: close and reopen a code fence) usually keeps the same cuts
PART_LIMIT = 4000

_FENCE_RE = re.compile(r"^```[ \t]*([\w+#.-]*)[ \t]*\n(.*?)(?:^```[ \t]*$|\Z)", re.S | re.M)
_INLINE_CODE_RE = re.compile(r"`([^`\n]+)`")
_LINK_RE = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+|tg://[^\s)]+|mailto:[^\s)]+)\)")
_BOLD_RE = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__", re.S)
_ITALIC_RE = re.compile(
    r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])|(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])"
)
_STRIKE_RE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING_RE = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*$", re.M)
_BULLET_RE = re.compile(r"^([ \t]*)[-*+][ \t]+", re.M)
_QUOTE_RE = re.compile(r"^&gt;[ \t]?(.*)$", re.M)
_TAG_RE = re.compile(r"<(/?)([a-z-]+)[^>]*>")
#: private-use placeholders for code spans while the rest is transformed
_PH = "\ue000{}\ue001"
_PH_RE = re.compile("\ue000(\\d+)\ue001")


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units: most emoji count 2)."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: str) -> str:
    """Escape for Telegram HTML: only ``& < >`` (and ``"`` inside attributes) need it."""
    return html.escape(text, quote=False)


def to_html(markdown: str) -> str:
    """Telegram-safe HTML for a Markdown reply; escaped plain text when the result would not balance."""
    out: list[str] = []
    pos = 0
    for m in _FENCE_RE.finditer(markdown):
        out.append(_inline(markdown[pos : m.start()]))
        lang, code = m.group(1), m.group(2).rstrip("\n")
        attr = f' class="language-{escape(lang)}"' if lang else ""
        out.append(f"<pre><code{attr}>{escape(code)}</code></pre>")
        pos = m.end()
    out.append(_inline(markdown[pos:]))
    result = "".join(out).strip()
    return result if _balanced(result) else escape(markdown)


def _inline(text: str) -> str:
    codes: list[str] = []

    def stash(m: re.Match[str]) -> str:
        codes.append(f"<code>{escape(m.group(1))}</code>")
        return _PH.format(len(codes) - 1)

    def link(m: re.Match[str]) -> str:
        url = m.group(2).replace("&amp;", "&")
        codes.append(f'<a href="{html.escape(url, quote=True)}">{m.group(1)}</a>')
        return _PH.format(len(codes) - 1)

    text = _INLINE_CODE_RE.sub(stash, text)
    text = escape(text)
    text = _LINK_RE.sub(link, text)
    text = _HEADING_RE.sub(r"<b>\1</b>", text)
    text = _BOLD_RE.sub(lambda m: f"<b>{m.group(1) or m.group(2)}</b>", text)
    text = _ITALIC_RE.sub(lambda m: f"<i>{m.group(1) or m.group(2)}</i>", text)
    text = _STRIKE_RE.sub(r"<s>\1</s>", text)
    text = _BULLET_RE.sub(r"\1• ", text)
    text = _quotes(text)
    # placeholders may nest (a code span inside a link text): resolve until none are left
    while _PH_RE.search(text):
        text = _PH_RE.sub(lambda m: codes[int(m.group(1))], text)
    return text


def _quotes(text: str) -> str:
    """Consecutive ``> `` lines become one ``<blockquote>``."""
    lines = text.split("\n")
    out: list[str] = []
    quote: list[str] = []
    for line in lines:
        m = _QUOTE_RE.match(line)
        if m:
            quote.append(m.group(1))
            continue
        if quote:
            out.append("<blockquote>" + "\n".join(quote) + "</blockquote>")
            quote = []
        out.append(line)
    if quote:
        out.append("<blockquote>" + "\n".join(quote) + "</blockquote>")
    return "\n".join(out)


def _balanced(markup: str) -> bool:
    stack: list[str] = []
    for m in _TAG_RE.finditer(markup):
        closing, tag = m.group(1) == "/", m.group(2)
        if not closing:
            stack.append(tag)
        elif not stack or stack.pop() != tag:
            return False
    return not stack


def visible(markup: str) -> str:
    """The text a user sees for our own markup (tags dropped, entities decoded)."""
    return html.unescape(_TAG_RE.sub("", markup))


# -- splitting ---------------------------------------------------------------------------------------

_BOUNDARIES = ("\n\n", "\n", ". ", "! ", "? ", "; ", ", ", " ")


def split_text(text: str, limit: int = PART_LIMIT) -> list[str]:
    """Cut ``text`` into parts of at most ``limit`` UTF-16 units, preferring paragraph, line, sentence
    and word boundaries (in that order) in the second half of a part. Whitespace at the cut is dropped.

    The split of a prefix is stable: once the text is longer than a part, appending text never moves
    the earlier cuts (streaming relies on that to keep finished parts finished).
    """
    parts: list[str] = []
    rest = text.strip()
    while utf16_len(rest) > limit:
        window = _prefix_within(rest, limit)
        cut = _best_cut(window)
        part, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if part:
            parts.append(part)
    if rest:
        parts.append(rest)
    return parts


def _prefix_within(text: str, limit: int) -> str:
    """The longest prefix of ``text`` within ``limit`` UTF-16 units (never half a surrogate pair)."""
    if len(text) <= limit // 2:
        return text
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return text[:i]
    return text


def _best_cut(window: str) -> int:
    floor = len(window) // 2
    for sep in _BOUNDARIES:
        idx = window.rfind(sep)
        if idx >= floor:
            return idx + len(sep.rstrip(" ")) if sep.strip() else idx + len(sep)
    return len(window)


def shown_len(markdown: str) -> int:
    """How long Telegram counts ``markdown`` once rendered: UTF-16 units of the visible text."""
    return utf16_len(visible(to_html(markdown)))


def split_markdown(markdown: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Markdown parts whose rendered visible text is at most ``limit`` UTF-16 units each, cut at the
    boundaries :func:`split_text` prefers; a code fence cut by a split is closed and reopened."""
    parts: list[str] = []
    rest, reopen = markdown.strip(), ""
    while rest:
        n = _longest_fitting_prefix(rest, reopen, limit)
        if n == len(rest):
            parts.append(_closed(reopen + rest)[0])
            break
        cut = _best_cut(rest[:n])
        while True:
            raw = rest[:cut].rstrip()
            part, next_reopen = _closed(reopen + raw)
            # rendering is not strictly monotonic (an unclosed ``**`` shows its stars): shrink if needed
            if shown_len(part) <= limit or cut <= 1:
                break
            cut = max(1, cut * 9 // 10)
        if raw:
            parts.append(part)
        rest, reopen = rest[cut:].lstrip(), next_reopen
    return parts


def _longest_fitting_prefix(rest: str, reopen: str, limit: int) -> int:
    """Binary search for the longest prefix of ``rest`` (in characters) whose rendered part fits. The
    source of a part can be far longer than what it shows (link URLs), but not endlessly: the search
    looks at most ``8 * limit`` characters ahead."""
    lo, hi = 1, min(len(rest), 8 * limit)
    if shown_len(_closed(reopen + rest[:hi])[0]) <= limit:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if shown_len(_closed(reopen + rest[:mid])[0]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    # never cut a surrogate pair's worth of nothing: at least one character per part
    return max(lo, 1)


def _closed(part: str) -> tuple[str, str]:
    """``part`` with a code fence left open closed, and the line that reopens it in the next part."""
    lang = _open_fence(part)
    if lang is None:
        return part, ""
    return part + "\n```", f"```{lang}\n"


def _open_fence(text: str) -> str | None:
    """The language of a fence left open at the end of ``text``, or None when all are closed."""
    lang: str | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("```"):
            lang = stripped[3:].strip() if lang is None else None
    return lang
