"""Durability and multi-process tests of the embedded engine, with real processes.

* kill -9 at random points, many rounds: every acknowledged append is present, the database passes
  ``PRAGMA integrity_check``, no duplicates, ``seq`` gap-free, ``message_count`` matches;
* two processes appending to one conversation at once: one gap-free order, nothing lost.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from store.api.store import Store
from store.models import Message, Scope
from store.sqlite.engine import DB_FILE, EmbeddedEngine

CHILD = Path(__file__).with_name("append_child.py")
ROOT = Path(__file__).resolve().parents[2]
SCOPE = Scope("default", "alice")
ROUNDS = 24

pytestmark = pytest.mark.durability


def _spawn(
    data_dir: Path,
    conv: str,
    prefix: str,
    count: int,
    *,
    wait: bool = False,
    tasks: int = 1,
    early: bool = False,
) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(CHILD), str(data_dir), conv, prefix, str(count)] + (["--wait"] if wait else [])
    cmd += ["--tasks", str(tasks)] + (["--early"] if early else [])
    return subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _acks(lines: list[str]) -> list[tuple[int, str]]:
    out = []
    for line in lines:
        if line.startswith("ack "):
            _, seq, content = line.split(" ", 2)
            out.append((int(seq), content.rstrip("\n")))
    return out


async def _new_conversation(data_dir: Path) -> str:
    async with Store(EmbeddedEngine(data_dir)) as store:
        return (await store.conversations.create(SCOPE, "durability", channel="cli")).sid


async def _all_messages(data_dir: Path, conv: str) -> tuple[list[Message], int]:
    async with Store(EmbeddedEngine(data_dir)) as store:
        out: list[Message] = []
        cursor = None
        while True:
            page = await store.messages.list(SCOPE, conv, limit=1000, cursor=cursor)
            out += page.items
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return out, (await store.conversations.get(SCOPE, conv)).message_count


async def _found_by_search(data_dir: Path, word: str) -> list[Message]:
    async with Store(EmbeddedEngine(data_dir)) as store:
        return await store.messages.search(SCOPE, word, limit=1000)


def _integrity(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
    finally:
        conn.close()


def _kill_after_acks(child: subprocess.Popen[str], rng: random.Random, rnd: int) -> list[tuple[int, str]]:
    """Let the child acknowledge a random number of appends, then SIGKILL it; returns every ack."""
    assert child.stdout is not None
    target = rng.choice([0, 0, 1, 3, 10, 25, 60])  # 0: killed while opening or right after
    seen = 0
    lines: list[str] = []
    while seen < target:
        line = child.stdout.readline()
        assert line, f"child exited early (round {rnd})"
        lines.append(line)
        seen += line.startswith("ack ")
    child.send_signal(signal.SIGKILL)
    lines += child.stdout.readlines()  # acks printed before the kill landed count too
    assert child.wait(timeout=30) == -signal.SIGKILL
    return _acks(lines)


def _kill_rounds(
    data_dir: Path, seed: int, prefix: str, rounds: int, *, tasks: int = 1, early: bool = False
) -> tuple[list[tuple[int, str]], list[Message]]:
    """``rounds`` children appending to one new conversation, each SIGKILLed after a random number of
    acks; then the database checked whole (integrity, FTS, seq without gaps, the conversation's
    count). Returns every ack and the stored messages."""
    rng = random.Random(seed)
    conv = anyio.run(_new_conversation, data_dir)
    acked: list[tuple[int, str]] = []
    for rnd in range(rounds):
        with _spawn(data_dir, conv, f"{prefix}{rnd}", 100_000, tasks=tasks, early=early) as child:
            acked += _kill_after_acks(child, rng, rnd)
    _integrity(data_dir / DB_FILE)
    messages, count = anyio.run(_all_messages, data_dir, conv)
    assert [m.seq for m in messages] == list(range(1, len(messages) + 1)), "seq has gaps"
    assert count == len(messages)
    # every stored message of a round is found by search, indexed or left pending by the kill
    # ("r0-17": the words "r0" and "17")
    first = {m.sid for m in messages if m.content.startswith(f"{prefix}0-")}
    found = {m.sid for m in anyio.run(_found_by_search, data_dir, f"{prefix}0")}
    assert found == first
    return acked, messages


def test_acknowledged_appends_survive_kill_9(tmp_path: Path) -> None:
    acked, messages = _kill_rounds(tmp_path, 20261129, "r", ROUNDS)
    contents = [m.content for m in messages]
    assert len(contents) == len(set(contents)), "duplicate messages"
    stored = {(m.seq, m.content) for m in messages}
    assert set(acked) <= stored, "an acknowledged message was lost"
    # at most one append per round was in flight (committed but not yet acknowledged) at the kill
    assert len(acked) <= len(messages) <= len(acked) + ROUNDS
    assert len(acked) > ROUNDS  # the rounds did real work


def test_group_commits_acknowledge_only_durable_appends_under_kill_9(tmp_path: Path) -> None:
    """16 concurrent appenders per process: their writes share commits (group commit), and a kill -9
    at random still loses nothing that was acknowledged."""
    tasks, rounds = 16, ROUNDS // 2
    acked, messages = _kill_rounds(tmp_path, 20261205, "g", rounds, tasks=tasks)
    contents = [m.content for m in messages]
    assert len(contents) == len(set(contents)), "duplicate messages"
    assert set(acked) <= {(m.seq, m.content) for m in messages}, "an acknowledged message was lost"
    # at most one append per task was in flight at each kill
    assert len(acked) <= len(messages) <= len(acked) + rounds * tasks
    assert len(acked) > rounds


def test_turn_openings_answered_before_their_commit_are_acknowledged_only_when_durable(
    tmp_path: Path,
) -> None:
    """The agent's turns open ``early`` (the results before the commit's fsync); a message is
    acknowledged after ``wait_durable``, and a kill -9 at random loses none of the acknowledged."""
    rounds = ROUNDS // 2
    acked, messages = _kill_rounds(tmp_path, 20261206, "e", rounds, early=True)
    users = [m for m in messages if m.role == "user"]
    contents = [m.content for m in users]
    assert len(contents) == len(set(contents)), "duplicate messages"
    assert set(acked) <= {(m.seq, m.content) for m in users}, "an acknowledged message was lost"
    # at most one opening per round was in flight at its kill; the next round's opening marks a
    # turn the kill cut (an interrupted marker): those are the only other messages
    assert len(acked) <= len(users) <= len(acked) + rounds
    assert all(m.role == "user" or m.message_type == "interrupted" for m in messages)
    assert len(acked) > rounds


def _run_together(children: dict[str, subprocess.Popen[str]]) -> dict[str, list[tuple[int, str]]]:
    """Wait until every child is ready, start them all at once, collect their acks."""
    for child in children.values():
        assert child.stdout is not None
        while (line := child.stdout.readline()) and line.strip() != "ready":
            pass
    for child in children.values():
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = {}
    for name, child in children.items():
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        outputs[name] = _acks(out.splitlines())
    return outputs


def test_two_processes_append_to_one_conversation(tmp_path: Path) -> None:
    conv = anyio.run(_new_conversation, tmp_path)
    per_child = 150
    children = {name: _spawn(tmp_path, conv, name, per_child, wait=True) for name in ("a", "b")}
    try:
        outputs = _run_together(children)
    finally:
        for child in children.values():
            with child:
                child.kill()
    messages, count = anyio.run(_all_messages, tmp_path, conv)
    assert [m.seq for m in messages] == list(range(1, 2 * per_child + 1))
    assert count == 2 * per_child
    for name, acks in outputs.items():
        assert [content for _, content in acks] == [f"{name}-{i}" for i in range(per_child)]
        mine = [m for m in messages if m.content.startswith(f"{name}-")]
        assert [m.content for m in mine] == [f"{name}-{i}" for i in range(per_child)]  # each in its order
        assert {(m.seq, m.content) for m in mine} == set(acks)
    _integrity(tmp_path / DB_FILE)
