"""The streaming markdown renderer: chunking never changes the result; markers are hidden."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from channels.terminal.render import (
    STYLE_BOLD,
    STYLE_CODE,
    STYLE_FENCE,
    STYLE_HEADING,
    STYLE_TEXT,
    Fragment,
    MarkdownStream,
    plain,
    render_markdown,
)

SAMPLE = (
    "# Title\n"
    "Some **bold** and `code` here.\n"
    "- item one\n"
    "* item two\n"
    "```python\n"
    "x = 1 ** 2\n"
    "```\n"
    "a *lone star and 2 * 3\n"
)


def styled(fragments: list[Fragment]) -> list[tuple[str, str]]:
    """Per-character styles, so that fragment boundaries do not matter."""
    return [(style, ch) for style, text in fragments for ch in text]


def stream(text: str, cuts: list[int]) -> list[Fragment]:
    md = MarkdownStream()
    out: list[Fragment] = []
    last = 0
    for cut in sorted(set(cuts)):
        out += md.feed(text[last:cut])
        last = cut
    return out + md.feed(text[last:]) + md.flush()


def test_whole_text_rendering() -> None:
    fragments = render_markdown(SAMPLE)
    assert plain(fragments) == (
        "Title\nSome bold and code here.\n• item one\n• item two\n"
        "```python\nx = 1 ** 2\n```\na *lone star and 2 * 3\n"
    )
    assert (STYLE_HEADING, "Title\n") in fragments
    assert (STYLE_BOLD, "bold") in fragments
    assert (STYLE_CODE, "code") in fragments
    assert (STYLE_FENCE, "```python\n") in fragments
    assert (STYLE_CODE, "x = 1 ** 2\n") in fragments  # no bold inside a code block
    assert fragments[-1][0] == STYLE_TEXT


@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=30))
def test_any_chunking_gives_the_same_styled_text(cuts: list[int]) -> None:
    assert styled(stream(SAMPLE, cuts)) == styled(render_markdown(SAMPLE))


@given(
    st.text(alphabet="ab *`#-\n", max_size=60),
    st.lists(st.integers(min_value=0, max_value=60), max_size=10),
)
def test_arbitrary_text_is_chunking_independent(text: str, cuts: list[int]) -> None:
    cuts = [c for c in cuts if c <= len(text)]
    assert styled(stream(text, cuts)) == styled(render_markdown(text))


def test_unfinished_markers_are_released_by_flush() -> None:
    md = MarkdownStream()
    assert plain(md.feed("price: 5 *")) == "price: 5 "
    assert plain(md.flush()) == "*"
