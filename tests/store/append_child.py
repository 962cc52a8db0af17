"""Child process for the durability and concurrency tests: appends messages and acknowledges each.

    python tests/store/append_child.py DATA_DIR CONVERSATION_SID PREFIX COUNT [--wait] [--tasks N] [--early]

Prints ``ready`` once the store is open (then, with ``--wait``, waits for a line on stdin), and
``ack <seq> <content>`` after each append returned -- i.e. after its transaction committed. The parent
compares what was acknowledged with what the store holds after killing this process. With
``--tasks N``, N concurrent tasks append (``PREFIX-<task>-<i>``), so their writes meet in group
commits: an ack then proves the group's commit returned. With ``--early`` each message is a turn's
user message, stored by ``store.turns.open(early=True)`` (the opening answered before its commit, as
the agent's turns open) and acknowledged after ``TurnOpening.wait_durable``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from store.api.store import Store
from store.models import Message, Scope
from store.sqlite.engine import EmbeddedEngine

SCOPE = Scope("default", "alice")


async def main(
    data_dir: Path, conversation: str, prefix: str, count: int, wait: bool, tasks: int, early: bool
) -> None:
    async with Store(EmbeddedEngine(data_dir)) as store:
        print("ready", flush=True)
        if wait:
            await anyio.to_thread.run_sync(sys.stdin.readline)

        async def append(name: str) -> None:
            for i in range(count):
                if early:
                    async with store.turns.open(
                        SCOPE, conversation, f"{name}-{i}", channel="cli", early=True
                    ) as op:
                        await op.wait_durable()
                        print(f"ack {op.message.seq} {op.message.content}", flush=True)
                    continue
                msg = await store.messages.append(
                    SCOPE,
                    Message(conversation_id=conversation, role="user", content=f"{name}-{i}", channel="cli"),
                )
                print(f"ack {msg.seq} {msg.content}", flush=True)

        if tasks <= 1:
            await append(prefix)
            return
        async with anyio.create_task_group() as tg:
            for t in range(tasks):
                tg.start_soon(append, f"{prefix}-{t}")


if __name__ == "__main__":
    args = sys.argv[1:]
    n_tasks = int(args[args.index("--tasks") + 1]) if "--tasks" in args else 1
    anyio.run(
        main, Path(args[0]), args[1], args[2], int(args[3]), "--wait" in args, n_tasks, "--early" in args
    )
