"""The assembler alone; the same variants over real HTTP are in test_openai_variants.py."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from agent.providers.base import ToolCall
from agent.providers.toolcalls import ToolCallAssembler


def _assemble(*deltas: list[dict[str, object]]) -> tuple[ToolCall, ...]:
    asm = ToolCallAssembler()
    for d in deltas:
        asm.add(d)
    return asm.calls()


def test_standard_fragments_by_index() -> None:
    got = _assemble(
        [{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}],
        [{"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": ""}}],
        [{"index": 0, "function": {"arguments": '{"x":'}}],
        [{"index": 1, "function": {"arguments": "{}"}}],
        [{"index": 0, "function": {"arguments": "1}"}}],
    )
    assert got == (ToolCall("a", "f", '{"x":1}'), ToolCall("b", "g", "{}"))


def test_name_streamed_in_pieces_is_joined() -> None:
    got = _assemble(
        [{"index": 0, "id": "a", "function": {"name": "get_"}}],
        [{"index": 0, "function": {"name": "time"}}],
        [{"index": 0, "function": {"arguments": "{}"}}],
    )
    assert got == (ToolCall("a", "get_time", "{}"),)


def test_parallel_calls_at_index_zero_without_ids_split_on_a_new_name() -> None:
    got = _assemble(
        [{"index": 0, "function": {"name": "f", "arguments": '{"a":1}'}}],
        [{"index": 0, "function": {"name": "g", "arguments": '{"b":2}'}}],
    )
    assert got == (ToolCall("call_0", "f", '{"a":1}'), ToolCall("call_1", "g", '{"b":2}'))


def test_arguments_as_object_and_empty_arguments() -> None:
    got = _assemble(
        [{"id": "a", "function": {"name": "f", "arguments": {"x": 1}}}],
        [{"id": "b", "function": {"name": "g"}}],
    )
    assert got == (ToolCall("a", "f", '{"x": 1}'), ToolCall("b", "g", "{}"))


def test_a_call_re_sent_whole_after_streaming_is_not_doubled() -> None:
    got = _assemble(
        [{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x"'}}],
        [{"index": 0, "function": {"arguments": ": 1}"}}],
        [{"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x": 1}'}}],
    )
    assert got == (ToolCall("a", "f", '{"x": 1}'),)


def test_junk_fragments_are_ignored() -> None:
    asm = ToolCallAssembler()
    asm.add(None)
    asm.add(["not a dict", 3])
    asm.add([{"index": "zero"}])
    asm.add([{"index": 0}])
    assert asm.calls() == ()


@given(
    args=st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
    repeat_name=st.booleans(),
    with_index=st.booleans(),
)
def test_any_chunking_of_the_arguments_reassembles_them(
    args: dict[str, object], cuts: list[int], repeat_name: bool, with_index: bool
) -> None:
    text = json.dumps(args)
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in itertools.pairwise(points)]
    asm = ToolCallAssembler()
    asm.add(
        [{"id": "c1", "function": {"name": "tool", "arguments": ""}} | ({"index": 0} if with_index else {})]
    )
    for piece in pieces:
        frag: dict[str, object] = {
            "function": {"arguments": piece} | ({"name": "tool"} if repeat_name else {})
        }
        if with_index:
            frag["index"] = 0
        asm.add([frag])
    assert asm.calls() == (ToolCall("c1", "tool", text),)
