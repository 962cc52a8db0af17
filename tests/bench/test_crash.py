"""The short form of the crash soak (``bench/crash.py``): nine kill -9 rounds (three each of ``serve``
under SSE chats, ``ask`` processes on one data dir, and ``osis serve`` under two daemons), with the
default ``agent.turn_lock_ttl_s``; once with the embedded store's writer thread and once with its writer
process (``[store] writer = "process"``), which must also end with its daemon, killed or not.

Required: nothing acknowledged is lost, nothing doubled, no dangling tool call reaches the model, no
cut turn stays unmarked, and after every restart each conversation's next turn starts within the
soak's 60 s deadline. How long it was blocked is the bench's figure (docs/reliability.md), never
asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.durability, pytest.mark.timeout(900)]


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_kill_9_rounds_lose_nothing_and_leave_marks(writer: str) -> None:
    run = subprocess.run(
        [
            *(sys.executable, "bench/crash.py", "--rounds", "9", "--deadline", "60", "--seed", "7"),
            *("--json", "--writer", writer),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["rounds_by_scenario"] == {"serve": 3, "ask": 3, "osis": 3}
    assert figures["acknowledged_turns"] > 0 and figures["interrupted_markers"] > 0, figures
    for name in ("lost", "duplicated", "dangling_sent_to_model", "user_runs_sent_to_model"):
        assert figures[name] == 0, (name, figures)
    for name in ("unmarked_user", "unmarked_tool", "seq_gaps"):
        assert figures[name] == 0, (name, figures)
    assert figures["stuck"] == 0, figures  # every next turn started within the 60 s deadline
    assert figures["writer"] == writer and figures["writer_processes_left"] == 0, figures
    assert run.returncode == 0, run.stderr[-2000:]
