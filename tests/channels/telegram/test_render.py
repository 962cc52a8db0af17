"""Markdown -> Telegram HTML and splitting, checked against the fake's strict HTML parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from channels.telegram.render import (
    TELEGRAM_LIMIT,
    shown_len,
    split_markdown,
    split_text,
    to_html,
    utf16_len,
    visible,
)
from tests.fakes.telegram_html import visible_text


def test_everything_is_escaped_before_formatting() -> None:
    html = to_html("a < b && c > d <script>alert(1)</script> **bold** *it* `x<y` ~~gone~~")
    assert html == (
        "a &lt; b &amp;&amp; c &gt; d &lt;script&gt;alert(1)&lt;/script&gt; <b>bold</b> <i>it</i> "
        "<code>x&lt;y</code> <s>gone</s>"
    )
    visible_text(html)  # Telegram would accept it


def test_code_blocks_links_headings_lists_quotes() -> None:
    md = (
        "# Title\n\n- one\n- two\n\n> quoted <b>\n\nsee [docs](https://example.org/a?b=1&c=2)\n\n"
        "```python\nif a < b:\n    print('**not bold**')\n```"
    )
    html = to_html(md)
    assert "<b>Title</b>" in html and "• one" in html
    assert "<blockquote>quoted &lt;b&gt;</blockquote>" in html
    assert '<a href="https://example.org/a?b=1&amp;c=2">docs</a>' in html
    assert "<pre><code class=\"language-python\">if a &lt; b:\n    print('**not bold**')</code></pre>" in html
    visible_text(html)


def test_snake_case_and_lone_stars_stay_text() -> None:
    assert to_html("my_var_name and 2 * 3 * 4") == "my_var_name and 2 * 3 * 4"


def test_a_doubtful_nesting_falls_back_to_escaped_text() -> None:
    html = to_html("**a *b** c*")
    visible_text(html)


def test_split_prefers_paragraphs_then_lines_then_sentences() -> None:
    para = "x" * 2500
    assert split_text(f"{para}\n\n{para}") == [para, para]
    line = "y" * 2500
    assert split_text(f"{line}\n{line}") == [line, line]
    sentence = "z" * 2500 + "."
    assert split_text(f"{sentence} {sentence}") == [sentence, sentence]


def test_split_counts_utf16_units() -> None:
    text = "😀" * 3000  # 6000 UTF-16 units, no boundaries at all
    parts = split_text(text)
    assert all(utf16_len(p) <= 4000 for p in parts) and "".join(parts) == text


def test_a_split_code_fence_is_closed_and_reopened() -> None:
    code = "\n".join(f"line {i}" for i in range(1500))
    parts = split_markdown(f"```sh\n{code}\n```")
    assert len(parts) >= 2
    assert parts[0].endswith("\n```") and parts[1].startswith("```sh\n")
    for part in parts:
        visible_text(to_html(part))


_TOKENS = [*"ab *_`~#>-[]()<>&\n\"'", "```", "**", "https://x.io", "😀", "\n\n", ". "]
_markdown = st.lists(st.sampled_from(_TOKENS), max_size=300).map(lambda t: "".join(t) * 30)


@settings(max_examples=60, deadline=None)
@given(_markdown)
def test_any_markdown_renders_to_html_telegram_accepts_within_the_limit(md: str) -> None:
    for part in split_markdown(md):
        html = to_html(part)
        shown = visible_text(html)  # raises where Telegram would answer 400
        assert shown == visible(html)
        assert utf16_len(shown) <= TELEGRAM_LIMIT


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=400).map(lambda s: s * 25))
def test_split_keeps_every_word_and_respects_the_limit(text: str) -> None:
    parts = split_text(text)
    assert all(utf16_len(p) <= 4000 for p in parts)
    assert "".join(parts).split() == text.split() or " ".join(parts).split() == text.split()


def test_split_of_a_growing_text_keeps_finished_parts() -> None:
    text = " ".join(f"word{i}" for i in range(3000))
    first = split_text(text[:9000])
    later = split_text(text)
    assert first[:-1] == later[: len(first) - 1]


def test_markdown_is_split_by_the_visible_length_telegram_counts() -> None:
    # the source is over 3x the limit (long link URLs), the visible text about 1,000 units: one part
    links = " ".join(f"[link{i}](https://example.org/{'p' * 300}/{i})" for i in range(40))
    assert split_markdown(links) == [links]
    # emoji count 2 units each: 3,000 of them shown need two parts, each within the limit
    emoji = " ".join("😀" * 10 for _ in range(300))
    parts = split_markdown(emoji)
    assert len(parts) == 2
    assert all(shown_len(p) <= TELEGRAM_LIMIT for p in parts)
    assert "".join(visible(to_html(p)) for p in parts).replace(" ", "") == emoji.replace(" ", "")


def test_a_smaller_limit_gives_smaller_parts() -> None:
    text = " ".join(f"Word {i} **in bold**." for i in range(400))
    parts = split_markdown(text, 1000)
    assert len(parts) > 4 and all(shown_len(p) <= 1000 for p in parts)
