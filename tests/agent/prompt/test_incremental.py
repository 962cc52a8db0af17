"""The model's view extended turn by turn (agent/prompt/incremental.py) is exactly the view derived
from the whole window (history_from), over generated conversations; and each reason to derive whole."""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.prompt.history import INTERRUPTED_MARK, SUMMARY_TYPE, fit, history_from, to_chat
from agent.prompt.incremental import (
    GROUP,
    INCREMENTAL,
    MARKED,
    NEW,
    SLID,
    WINDOW,
    Derived,
    derive,
)
from agent.providers.base import ChatMessage
from store import INTERRUPTED_TEXT, INTERRUPTED_TYPE, Message


def convert(m: Message, group: bool) -> ChatMessage | None:
    return to_chat(m, group=group)


@dataclass
class Conversation:
    """A stored conversation as the window cache sees it: the messages in seq order (the cache's
    own objects), the window floor (a /clear) and the window's size."""

    limit: int
    messages: list[Message] = field(default_factory=list)
    floor: int = 0
    calls: list[str] = field(default_factory=list)

    def add(self, role: str, content: str | None = None, **kw: object) -> Message:
        seq = len(self.messages) + 1
        text = f"{role} {seq}" if content is None else content
        msg = Message(sid=f"m{seq}", seq=seq, role=role, content=text, **kw)  # type: ignore[arg-type]
        self.messages.append(msg)
        return msg

    def window(self) -> list[Message]:
        return [m for m in self.messages if m.seq > self.floor][-self.limit :]

    def reread(self) -> None:
        """The window read whole again: the same messages as new objects."""
        self.messages = [dataclasses.replace(m) for m in self.messages]

    def last_shown_user(self) -> int:
        for i in range(len(self.messages) - 1, -1, -1):
            m = self.messages[i]
            if m.role == "user" and not m.superseded_by and m.message_type != SUMMARY_TYPE:
                return i
        return -1


STEPS = [
    "user",
    "user_group",
    "user_image",
    "answer",
    "interrupted",
    "error_empty",
    "error_text",
    "cut_marker",
    "calls",
    "result",
    "orphan_result",
    "summary",
    "retry_marks",
    "edit",
    "reread",
    "group",
    "clear",
]


def apply(conv: Conversation, step: str, n: int) -> str:
    """One change to the conversation, as the store and the turns make them; answers what the window
    cache would do with its kept view: "keep", "forget" (its entry dropped) or "reread"."""
    if step in ("user", "user_group", "user_image"):
        attachments = (
            json.dumps([{"kind": "image", "id": f"att{n}", "name": "p.png", "width": 64, "height": 64}])
            if step == "user_image"
            else ""
        )
        conv.add("user", sender=f"tg:{n % 3}" if step == "user_group" else "", attachments=attachments)
    elif step == "answer":
        conv.add("assistant", "x" * (n * 7))
    elif step == "interrupted":
        conv.add("assistant", "half" if n % 2 else "", status="interrupted")
    elif step == "error_empty":
        conv.add("assistant", "", status="error")
    elif step == "error_text":
        conv.add("assistant", "partial", status="error")
    elif step == "cut_marker":
        conv.add("assistant", INTERRUPTED_TEXT, status="interrupted", message_type=INTERRUPTED_TYPE)
    elif step == "calls":
        ids = [f"c{len(conv.messages)}_{k}" for k in range(1 + n % 2)]
        conv.calls = ids
        calls = json.dumps([{"id": i, "name": "t", "arguments": "{}"} for i in ids])
        conv.add("assistant", "" if n % 2 else "calling", tool_calls=calls)
    elif step == "result" and conv.calls:
        conv.add(
            "tool",
            "r",
            tool_call_id=conv.calls.pop(0),
            name="t",
            status="error" if n % 3 == 0 else "complete",
        )
    elif step in ("result", "orphan_result"):
        conv.add("tool", "r", tool_call_id=f"ghost{n}", name="t")
    elif step == "summary":
        conv.add("system", f"summary {n}" if n % 4 else "", message_type=SUMMARY_TYPE)
        # a compaction moves the floor: the cache reads the window whole; n odd: read as if not
        return "reread" if n % 2 else "keep"
    elif step == "retry_marks":
        # a repeated request re-answers the newest shown user message: what follows it is marked
        for m in conv.messages[conv.last_shown_user() + 1 :]:
            m.superseded_by = f"turn{n}"
    elif step == "edit":
        start = conv.last_shown_user()
        for m in conv.messages[max(start, 0) :]:
            m.superseded_by = f"turn{n}"
        # a re-run drops the cached window first; n odd: as if it did not (the view must notice)
        return "keep" if n % 2 else "forget"
    elif step == "reread":
        return "reread"
    elif step == "clear":
        conv.floor = len(conv.messages)
        return "forget"
    return "keep"


@settings(deadline=None, max_examples=500)  # a busy machine must not fail a correctness property
@given(
    st.integers(2, 24),
    st.lists(
        st.tuples(st.sampled_from(STEPS), st.integers(0, 9), st.booleans()),
        min_size=40,
        max_size=160,
    ),
)
def test_extended_view_equals_the_whole_derivation(limit: int, script: list[tuple[str, int, bool]]) -> None:
    """Step by step, the view extended from the kept one equals history_from of the whole window
    (summary, messages, seqs, token estimate), and so does fitting it with its known estimate;
    and a turn that only added messages within the window is extended, not derived whole."""
    check_script(limit, script)


def test_long_generated_conversations() -> None:
    """The same over long conversations (windows sliding many times), from fixed seeds, with
    ordinary turns more frequent than the rest."""
    weights = [6 if s in ("user", "answer", "calls", "result") else 1 for s in STEPS]
    for seed in range(12):
        rng = random.Random(seed)
        script = [(rng.choices(STEPS, weights)[0], rng.randrange(10), rng.random() < 0.7) for _ in range(600)]
        check_script(rng.choice((3, 8, 30, 200)), script)


def check_script(limit: int, script: list[tuple[str, int, bool]]) -> None:
    conv = Conversation(limit)
    kept: Derived | None = None
    group = False
    only_appended = False
    for step, n, build in script:
        if step == "group":
            group = not group
            only_appended = False
        action = apply(conv, step, n)
        if action == "reread":
            conv.reread()
        if action != "keep":
            kept = None if action == "forget" else kept
            only_appended = False
        if step in ("edit", "summary"):
            only_appended = False
        if not build:
            continue
        window = conv.window()
        expected = history_from(window, group=group)
        tail_seq = kept.tail.seq if kept is not None else -1
        history, kept, path = derive(window, group=group, convert=convert, kept=kept)
        assert history == expected
        if only_appended and window and tail_seq >= window[0].seq:
            assert path == INCREMENTAL
        only_appended = kept is not None
        if kept is not None:
            assert kept.head == history.messages[: len(kept.head)]
            assert len(kept.parts) <= sum(1 for m in window if m.role == "user")
        for budget in (1, 50, 400, 10**6):
            for ratio in (0.7, 1.0, 1.37):
                assert fit(history.messages, budget, ratio, tokens=history.tokens) == fit(
                    history.messages, budget, ratio
                )


def _turns(conv: Conversation, count: int) -> None:
    for i in range(count):
        conv.add("user", f"question {i}")
        conv.add("assistant", f"answer {i}")


def _build(conv: Conversation, kept: Derived | None, group: bool = False) -> tuple[Derived | None, str]:
    window = conv.window()
    history, kept, path = derive(window, group=group, convert=convert, kept=kept)
    assert history == history_from(window, group=group)
    return kept, path


def test_a_long_conversation_is_extended_turn_after_turn() -> None:
    """The common path: 200 messages in the window, each turn adds its user message (then its
    answer); the view is built whole once, then extended, walking only the newest part."""
    conv = Conversation(200)
    _turns(conv, 150)
    conv.add("user", "now")
    kept, path = _build(conv, None)
    assert path == NEW
    for i in range(50):
        conv.add("assistant", f"reply {i}")
        conv.add("user", f"next {i}")
        assert kept is not None
        tail = kept.tail.seq
        kept, path = _build(conv, kept)
        assert path == INCREMENTAL
        assert kept is not None and kept.tail.seq == tail + 2  # the open tail is the new user message
        assert kept.parts[0][0] >= conv.window()[0].seq  # what slid out of the window is gone


def test_each_reason_to_derive_whole() -> None:
    conv = Conversation(10)
    _turns(conv, 3)
    kept, path = _build(conv, None)
    assert path == NEW
    kept, path = _build(conv, kept, group=True)
    assert path == GROUP  # a group chat shows each user message with its sender
    conv.reread()
    kept, path = _build(conv, kept, group=True)
    assert path == WINDOW  # new objects: the window was read whole again
    _turns(conv, 6)  # 12 new messages: more than the window holds
    kept, path = _build(conv, kept, group=True)
    assert path == WINDOW
    conv.messages[-2].superseded_by = "edit-turn"  # the open tail's user message edited away
    conv.messages[-1].superseded_by = "edit-turn"
    kept, path = _build(conv, kept, group=True)
    assert path == MARKED
    # a window with no shown user message: the open tail starts at the window's first message
    quiet = Conversation(4)
    quiet.add("assistant", "a greeting")
    kept, path = _build(quiet, None)
    assert path == NEW and kept is not None and not kept.tail_is_user
    for _ in range(3):
        quiet.add("assistant", "more")
    kept, path = _build(quiet, kept)
    assert path == INCREMENTAL
    quiet.add("assistant", "more")  # the window's first message leaves it
    kept, path = _build(quiet, kept)
    assert path == SLID


def test_marks_and_interrupted_answers_in_the_open_tail_need_no_whole_derivation() -> None:
    """A repeated request marks what its earlier attempt left; an interrupted answer is hidden while
    its turn is the newest and shown once a new user message follows: all in the open tail."""
    conv = Conversation(50)
    _turns(conv, 4)
    conv.add("user", "cut short")
    conv.add("assistant", "half an answer", status="interrupted")
    kept, path = _build(conv, None)
    assert path == NEW
    for m in conv.messages[-1:]:
        m.superseded_by = "retry"
    conv.add("assistant", "the full answer")
    kept, path = _build(conv, kept)
    assert path == INCREMENTAL
    conv.add("user", "thanks")
    conv.add("assistant", "partly", status="interrupted")
    kept, path = _build(conv, kept)
    assert path == INCREMENTAL
    history = derive(conv.window(), group=False, convert=convert, kept=kept)[0]
    shown = [(m.role, m.content) for m in history.messages]
    # the retried answer's first attempt is not shown; the newest turn's interrupted answer is not either
    assert shown[-3:] == [("user", "cut short"), ("assistant", "the full answer"), ("user", "thanks")]
    conv.add("user", "and now?")
    kept, path = _build(conv, kept)
    assert path == INCREMENTAL
    history = derive(conv.window(), group=False, convert=convert, kept=kept)[0]
    # once a new user message follows, the interrupted answer is shown, marked
    assert [(m.role, m.content) for m in history.messages[-3:]] == [
        ("user", "thanks"),
        ("assistant", f"partly\n{INTERRUPTED_MARK}"),
        ("user", "and now?"),
    ]


def test_a_summary_leaving_the_window_leaves_the_view() -> None:
    """A summary message slid out of the window is not shown any more (as history_from has it),
    and a newer one replaces an older one, even an empty one."""
    conv = Conversation(6)
    _turns(conv, 1)
    conv.add("system", "the summary", message_type=SUMMARY_TYPE)
    kept, path = _build(conv, None)
    assert path == NEW
    for i in range(4):
        conv.add("user", f"q{i}")
        kept, path = _build(conv, kept)
        assert path == INCREMENTAL
        conv.add("assistant", f"a{i}")
        kept, path = _build(conv, kept)
        assert path == INCREMENTAL
    assert derive(conv.window(), group=False, convert=convert, kept=kept)[0].summary == ""
    conv.add("system", "newer", message_type=SUMMARY_TYPE)
    conv.add("user", "q")
    conv.add("system", "", message_type=SUMMARY_TYPE)
    conv.add("user", "q again")
    kept, path = _build(conv, kept)
    assert path == INCREMENTAL
    assert derive(conv.window(), group=False, convert=convert, kept=kept)[0].summary == ""
