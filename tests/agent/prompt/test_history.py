"""The context window's pure parts: estimate, calibration, repair, turn-boundary trimming."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.prompt.history import (
    INTERRUPTED_MARK,
    MISSING_RESULT,
    TokenCalibrator,
    estimate_message,
    fit,
    history_from,
    repair,
    split_turns,
)
from agent.providers.base import ChatMessage, ToolCall
from store import INTERRUPTED_TEXT, Message


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def assistant(text: str, *call_ids: str) -> ChatMessage:
    return ChatMessage(
        role="assistant", content=text, tool_calls=tuple(ToolCall(c, "t", "{}") for c in call_ids)
    )


def result(call_id: str) -> ChatMessage:
    return ChatMessage(role="tool", content=f"r{call_id}", tool_call_id=call_id, name="t")


def test_repair_answers_dangling_calls_and_drops_orphans() -> None:
    msgs = [
        result("orphan-first"),
        assistant("leading assistant"),
        user("q1"),
        assistant("", "a", "b"),
        result("b"),
        user("q2"),  # call "a" was never answered
        result("ghost"),
        assistant("", "c"),
    ]
    out = repair(msgs)
    assert [(m.role, m.tool_call_id) for m in out] == [
        ("user", ""),
        ("assistant", ""),
        ("tool", "b"),
        ("tool", "a"),
        ("user", ""),
        ("assistant", ""),
        ("tool", "c"),
    ]
    assert out[3].content == MISSING_RESULT and out[3].is_error
    assert out[6].content == MISSING_RESULT
    assert msgs[0].role == "tool"  # the input is not changed


def test_interrupted_and_error_replies_in_the_model_view() -> None:
    stored = [
        Message(seq=1, role="user", content="hi"),
        Message(seq=2, role="assistant", content="half an ans", status="interrupted"),
        Message(seq=3, role="user", content="again"),
        Message(seq=4, role="assistant", content="", status="error"),
        Message(seq=5, role="system", content="old summary", message_type="summary"),
        Message(seq=6, role="user", content="third", sender="tg:1"),
    ]
    h = history_from(stored, group=True)
    assert h.summary == "old summary" and (h.first_seq, h.last_seq) == (1, 6)
    assert [(m.role, m.content) for m in h.messages] == [
        ("user", "hi"),
        ("assistant", f"half an ans\n{INTERRUPTED_MARK}"),
        ("user", "again"),
        # the empty error marker is not shown, so the repair puts a visible note between the users
        ("assistant", INTERRUPTED_TEXT),
        ("user", "tg:1: third"),
    ]


def test_fit_keeps_whole_newest_turns() -> None:
    turns = [
        [user(f"q{i}" * 40), assistant("", f"c{i}"), result(f"c{i}"), assistant("done " * 40)]
        for i in range(5)
    ]
    msgs = [m for t in turns for m in t]
    one_turn = sum(estimate_message(m) for m in turns[0])
    kept = fit(msgs, budget=2 * one_turn + 1)
    assert kept == turns[3] + turns[4]
    # the newest turn is kept even when it alone is over budget
    assert fit(msgs, budget=1) == turns[4]
    assert fit(msgs, budget=10**9) == msgs


def test_calibrator_follows_reported_usage() -> None:
    cal = TokenCalibrator()
    assert cal.corrected("m", 1000) == 1000
    cal.observe("m", 1000, 1500)
    assert cal.corrected("m", 1000) == 1500
    cal.observe("m", 1000, 1500)
    assert abs(cal.ratio("m") - 1.5) < 1e-9 and cal.ratio("other") == 1.0
    cal.observe("m", 10, 10**6)  # absurd reports are clamped
    assert cal.ratio("m") <= TokenCalibrator.MAX_RATIO
    cal.observe("m", 0, 100)  # nothing to learn from
    cal.observe("m", 100, 0)


roles = st.sampled_from(["user", "assistant", "assistant_calls", "tool"])


@settings(deadline=None)  # a busy CI machine must not fail a correctness property
@given(st.lists(st.tuples(roles, st.integers(0, 3)), max_size=30), st.integers(1, 400))
def test_repair_then_fit_is_always_valid(script: list[tuple[str, int]], budget: int) -> None:
    msgs: list[ChatMessage] = []
    for i, (role, ref) in enumerate(script):
        if role == "user":
            msgs.append(user(f"u{i}"))
        elif role == "assistant":
            msgs.append(assistant(f"a{i}"))
        elif role == "assistant_calls":
            msgs.append(assistant("", f"c{i}", f"d{i}"))
        else:
            msgs.append(result(f"c{max(i - ref, 0)}"))
    out = fit(repair(msgs), budget)
    if not out:
        assert not any(m.role == "user" for m in msgs)
        return
    assert out[0].role == "user"
    open_ids: set[str] = set()
    for m in out:
        if m.role == "tool":
            assert m.tool_call_id in open_ids
            open_ids.discard(m.tool_call_id)
        else:
            assert not open_ids
            open_ids = {c.id for c in m.tool_calls}
    assert not open_ids
    assert all(t[0].role == "user" for t in split_turns(out))


def test_a_cut_turn_marker_is_shown_and_superseded_answers_are_not() -> None:
    stored = [
        Message(sid="1", seq=1, role="user", content="first"),
        Message(
            sid="2",
            seq=2,
            role="assistant",
            content=INTERRUPTED_TEXT,
            status="interrupted",
            message_type="interrupted",
        ),
        Message(sid="3", seq=3, role="user", content="second"),
        Message(sid="4", seq=4, role="assistant", content="half", status="interrupted"),
        Message(sid="5", seq=5, role="assistant", content="the later answer"),
        Message(sid="6", seq=6, role="user", content="third (a repeated request)"),
        Message(
            sid="7",
            seq=7,
            role="assistant",
            content=INTERRUPTED_TEXT,
            status="interrupted",
            message_type="interrupted",
        ),
    ]
    assert [(m.role, m.content) for m in history_from(stored).messages] == [
        ("user", "first"),
        ("assistant", INTERRUPTED_TEXT),  # as it is: no "[interrupted]" suffix on the marker
        ("user", "second"),
        ("assistant", "the later answer"),  # the interrupted "half" before it is left out
        ("user", "third (a repeated request)"),  # the turn answering it now: its marker left out
    ]
