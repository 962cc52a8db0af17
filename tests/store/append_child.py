"""Child process for the durability and concurrency tests: appends messages and acknowledges each.

    python tests/store/append_child.py DATA_DIR CONVERSATION_SID PREFIX COUNT [--wait]

Prints ``ready`` once the store is open (then, with ``--wait``, waits for a line on stdin), and
``ack <seq> <content>`` after each append returned -- i.e. after its transaction committed. The parent
compares what was acknowledged with what the store holds after killing this process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from store.api.store import Store
from store.models import Message, Scope
from store.sqlite.engine import EmbeddedEngine

SCOPE = Scope("default", "alice")


async def main(data_dir: Path, conversation: str, prefix: str, count: int, wait: bool) -> None:
    async with Store(EmbeddedEngine(data_dir)) as store:
        print("ready", flush=True)
        if wait:
            await anyio.to_thread.run_sync(sys.stdin.readline)
        for i in range(count):
            msg = await store.append_message(
                SCOPE,
                Message(conversation_id=conversation, role="user", content=f"{prefix}-{i}", channel="cli"),
            )
            print(f"ack {msg.seq} {msg.content}", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    anyio.run(main, Path(args[0]), args[1], args[2], int(args[3]), "--wait" in args)
