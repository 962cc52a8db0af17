"""The model's view of a window, extended by each turn's new messages instead of derived again whole.

:func:`~agent.prompt.history.history_from` walks the whole window (``agent.history_limit``
messages) to build the model's view of it. Between two turns of a conversation only a few messages
changed: the window grew at its end (last turn's answer, the new user message) and slid by as many
at its start. :func:`derive` keeps what it derived last time (:class:`Derived`, held by the window
cache with the window) and walks only the newest part; it gives exactly what ``history_from`` gives
(``tests/agent/prompt/test_incremental.py`` checks it over generated conversations, turn by turn).

Why that is exact: the derivation splits at every *shown* user message (one not superseded, not a
summary), and each part derives on its own:

* the interrupted answers left out (:func:`~agent.prompt.history.superseded_answers`) are decided
  within each user message's group, and a user message starts a group;
* the repair (:func:`~agent.prompt.history.repair`) carries nothing over a user message: the calls
  still open before it get their error results there, and when the part before it shows only its
  user message, the interrupted marker goes between the two;
* messages before the first shown user message are never shown, and the newest summary wins.

So the view is the *closed* parts (from one shown user message to the next), each derived once and
kept, then the *open tail* (from the newest shown user message to the end), derived again every
turn: there the last group's interrupted answers are left out and open calls are answered, and a
retried request marks its earlier answer superseded (``agent/turn/loop.py``), all of which only
ever concern the open tail. When the window slides, the closed parts whose user message left it go.

What is kept is used only when the new window holds the very message objects it was derived from
(the window cache joins new messages to the same objects, and reads a window whole again into new
ones); else the view is derived whole (and kept for the next turn), for one of these reasons:

* ``new``: nothing kept (the conversation's first turn in this process, the window read whole again
  after a ``/clear``, a compaction or a re-run, or dropped from the cache);
* ``group``: the conversation's group flag changed (a group chat prefixes user messages);
* ``window``: the window does not hold the message the view was derived up to (read whole again,
  or more new messages than the window holds);
* ``slid``: the open tail's start left the window (a window with no shown user message);
* ``marked``: the open tail's user message was marked superseded (an edit).

The messages of the closed parts are never changed afterwards: the only edit of a stored message is
a re-run's ``superseded_by`` mark, which only touches what follows the newest shown user message (a
re-run of an older one is refused, :mod:`agent.rerun`), and an edit drops the cached window first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agent.prompt.history import (
    SUMMARY_TYPE,
    History,
    estimate_messages,
    repair,
    superseded_answers,
)
from agent.providers.base import ChatMessage
from store import INTERRUPTED_TEXT, Message, Role

Convert = Callable[[Message, bool], ChatMessage | None]

INCREMENTAL = "incremental"
NEW = "new"
GROUP = "group"
WINDOW = "window"
SLID = "slid"
MARKED = "marked"
#: the reasons a view is derived whole, in the order they are checked
FULL_REASONS = (NEW, GROUP, WINDOW, SLID, MARKED)

_USER = Role.USER.value


@dataclass(slots=True, eq=False)
class Derived:
    """What a window derived to, kept to extend it at the next turn (at most the window's size)."""

    group: bool
    #: the first message of the open tail: the newest shown user message (while the window shows
    #: none: its first message), and whether it is such a user message
    tail: Message
    tail_is_user: bool
    #: the window's last message when derived: the next window must hold this very object
    last: Message
    #: the closed parts' view, oldest first, and its token estimate
    head: list[ChatMessage] = field(default_factory=list)
    tokens: int = 0
    #: per closed part, oldest first: (seq of its user message, its messages in ``head``, their tokens)
    parts: deque[tuple[int, int, int]] = field(default_factory=deque)
    #: the newest summary among the closed parts (seq -1: none)
    summary_seq: int = -1
    summary: str = ""


@dataclass(slots=True)
class HistoryStats:
    """How the turns' views were built, for ``/metrics`` (one event loop: plain ints)."""

    #: builds by path: ``incremental`` or one of :data:`FULL_REASONS`
    builds: dict[str, int] = field(default_factory=lambda: dict.fromkeys((INCREMENTAL, *FULL_REASONS), 0))
    #: stored messages the builds walked (an incremental one: the open tail and the new messages)
    walked: int = 0

    def lines(self) -> list[str]:
        name = "hero_prompt_history_builds_total"
        out = [
            f"# HELP {name} Model views of a conversation's window built for a turn: extended by the new"
            " messages (incremental) or derived from the whole window (full), by reason: new, group,"
            " window, slid, marked (docs/agent.md).",
            f"# TYPE {name} counter",
            f'{name}{{path="incremental"}} {self.builds[INCREMENTAL]}',
            *(f'{name}{{path="full",reason="{r}"}} {self.builds[r]}' for r in FULL_REASONS),
        ]
        walked = "hero_prompt_history_messages_walked_total"
        return [
            *out,
            f"# HELP {walked} Stored messages those builds walked (an incremental build: only the newest"
            " user message's part and what follows).",
            f"# TYPE {walked} counter",
            f"{walked} {self.walked}",
        ]


#: the process's prompt builds
HISTORY_STATS = HistoryStats()


def derive(
    stored: Sequence[Message], *, group: bool, convert: Convert, kept: Derived | None
) -> tuple[History, Derived | None, str]:
    """The window's view (exactly :func:`~agent.prompt.history.history_from`'s), what to keep for
    the next turn, and how it was built: :data:`INCREMENTAL` from ``kept`` (which is updated in
    place), else the reason it was derived whole. ``stored`` is the window, oldest first, with
    gap-free seqs."""
    if not stored:
        return History(summary="", messages=[], tokens=0), None, NEW
    first = stored[0].seq
    reason = NEW if kept is None else _unusable(kept, stored, group)
    if kept is None or reason:
        kept = Derived(group, stored[0], _opens(stored[0]), stored[-1])
        start = 0
    else:
        _slide(kept, first)
        start = kept.tail.seq - first
    begin = start
    for i in range(start + 1, len(stored)):
        if _opens(stored[i]):
            _close(kept, stored[begin:i], group, convert)
            begin = i
    kept.tail, kept.tail_is_user, kept.last = stored[begin], _opens(stored[begin]), stored[-1]
    tail = stored[begin:]
    chats, summary_seq, summary = _view(tail, superseded_answers(tail), group, convert)
    view = repair(chats)
    if summary_seq < 0:
        summary = kept.summary  # "" when none is left in the window
    history = History(
        summary=summary,
        messages=kept.head + view,
        first_seq=first,
        last_seq=stored[-1].seq,
        tokens=kept.tokens + estimate_messages(view),
    )
    HISTORY_STATS.walked += len(stored) - start
    return history, kept, reason or INCREMENTAL


def _unusable(kept: Derived, stored: Sequence[Message], group: bool) -> str:
    """Why ``kept`` cannot be extended to ``stored`` ("" when it can); O(1)."""
    if kept.group != group:
        return GROUP
    first = stored[0].seq
    last = kept.last.seq - first
    if not 0 <= last < len(stored) or stored[last] is not kept.last:
        return WINDOW
    tail = kept.tail.seq - first
    if tail < 0 or stored[tail] is not kept.tail:
        return SLID
    if kept.tail_is_user and not _opens(kept.tail):
        return MARKED
    return ""


def _slide(kept: Derived, first: int) -> None:
    """Drops the closed parts whose user message left the window (what is left of such a part
    precedes the window's first shown user message: never shown), and a summary that left it."""
    count = tokens = 0
    parts = kept.parts
    while parts and parts[0][0] < first:
        _, n, t = parts.popleft()
        count += n
        tokens += t
    if count:
        del kept.head[:count]
        kept.tokens -= tokens
    if kept.summary_seq < first:
        kept.summary_seq, kept.summary = -1, ""


def _close(kept: Derived, part: Sequence[Message], group: bool, convert: Convert) -> None:
    """Derives a closed part (followed by a shown user message) once and keeps it: before the
    window's first shown user message only its summaries count."""
    chats, summary_seq, summary = _view(part, superseded_answers(part, open_end=False), group, convert)
    if summary_seq >= 0:
        kept.summary_seq, kept.summary = summary_seq, summary
    if not _opens(part[0]):
        return
    view = repair(chats)
    if view[-1].role == "user":  # the next shown user message follows: as repair() puts it
        view.append(ChatMessage(role="assistant", content=INTERRUPTED_TEXT))
    tokens = estimate_messages(view)
    kept.head += view
    kept.tokens += tokens
    kept.parts.append((part[0].seq, len(view), tokens))


def _view(
    part: Sequence[Message], hidden: set[str], group: bool, convert: Convert
) -> tuple[list[ChatMessage], int, str]:
    """The shown messages of ``part`` as the model sees them (before repair), and the seq and text
    of its newest summary (-1, "": none); as :func:`~agent.prompt.history.history_from` does."""
    out: list[ChatMessage] = []
    summary_seq, summary = -1, ""
    for m in part:
        if m.superseded_by or m.sid in hidden:
            continue
        if m.message_type == SUMMARY_TYPE:
            summary_seq, summary = m.seq, m.content
            continue
        chat = convert(m, group)
        if chat is not None:
            out.append(chat)
    return out, summary_seq, summary


def _opens(m: Message) -> bool:
    """A shown user message: where the derivation splits."""
    return m.role == _USER and not m.superseded_by and m.message_type != SUMMARY_TYPE
