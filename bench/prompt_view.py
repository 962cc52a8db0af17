"""The prompt path alone: one turn's model view of its window, derived whole or extended.

A conversation of ordinary turns (a user message, an answer; every fifth turn a tool call and its
result) slides through a window of ``--sizes`` messages, two messages a turn, as the window cache
hands it to the prompt builder. Per turn, CPU time (``time.thread_time``) of:

* **whole**: what the builder did before the view was kept: ``history_from`` over the whole window
  (with the window cache's memo of each message's model view), its token estimate summed, ``fit``;
* **extended**: ``derive`` from last turn's view (``agent/prompt/incremental.py``), ``fit`` with the
  known estimate.

Both answers are compared at every turn (they must be equal).

    .venv/bin/python -m bench.prompt_view [--turns 2000] [--sizes 50,200,1000]
"""

from __future__ import annotations

import argparse
import json
import time

from agent.prompt.history import estimate_messages, fit, history_from, to_chat
from agent.prompt.incremental import Derived, derive
from agent.providers.base import ChatMessage
from store import Message

BUDGET = 10**9
RATIO = 1.1


def conversation(turns: int) -> list[Message]:
    out: list[Message] = []

    def add(role: str, content: str, tool_calls: str = "", tool_call_id: str = "", name: str = "") -> None:
        seq = len(out) + 1
        out.append(
            Message(
                sid=f"s{seq}",
                seq=seq,
                role=role,
                content=content,
                tool_calls=tool_calls,
                tool_call_id=tool_call_id,
                name=name,
            )
        )

    for i in range(turns):
        add("user", f"question {i}: " + "some words of a question " * 3)
        if i % 5 == 4:
            calls = json.dumps([{"id": f"call{i}", "name": "count", "arguments": "{}"}])
            add("assistant", "", tool_calls=calls)
            add("tool", f"result {i}", tool_call_id=f"call{i}", name="count")
        add("assistant", f"answer {i}: " + "some words of an answer " * 12)
    return out


def windows(messages: list[Message], size: int, turns: int) -> list[list[Message]]:
    """The window at each turn's start: the newest ``size`` messages up to that turn's user message."""
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    return [messages[max(0, u + 1 - size) : u + 1] for u in users[-turns:]]


def measure(size: int, turns: int) -> tuple[float, float]:
    memo: dict[tuple[str, bool], ChatMessage | None] = {}

    def convert(m: Message, group: bool) -> ChatMessage | None:
        key = (m.sid, group)
        if key not in memo:
            memo[key] = to_chat(m, group=group)
        return memo[key]

    ws = windows(conversation(turns + size), size, turns)
    for w in ws:  # every message's view converted once, as the window cache holds them
        history_from(w, convert=convert)
    whole = extended = 0.0
    kept: Derived | None = None
    for w in ws:
        t0 = time.thread_time()
        h = history_from(w, convert=convert)
        estimate_messages(h.messages)
        a = fit(h.messages, BUDGET, RATIO)
        t1 = time.thread_time()
        h2, kept, _ = derive(w, group=False, convert=convert, kept=kept)
        b = fit(h2.messages, BUDGET, RATIO, tokens=h2.tokens)
        t2 = time.thread_time()
        assert h2 == h and a == b, "the extended view differs from the whole derivation"
        whole += t1 - t0
        extended += t2 - t1
    return whole / turns * 1e6, extended / turns * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--sizes", default="50,200,1000")
    args = parser.parse_args()
    print(f"{args.turns} turns per size; CPU per turn, us (thread_time)")
    print(f"{'window':>8} {'whole':>8} {'extended':>9} {'ratio':>6}")
    for size in (int(s) for s in args.sizes.split(",")):
        whole, extended = measure(size, args.turns)
        print(f"{size:>8} {whole:>8.1f} {extended:>9.1f} {whole / extended:>6.1f}")


if __name__ == "__main__":
    main()
