"""Child process for the osis sharing test: runs turns on one conversation through an OSIS server.

    python tests/store/osis_turn_child.py STORE_URL CONVERSATION_SID PREFIX COUNT

Each turn holds the conversation lock (a lease on the server) and appends a question and its answer,
so turns of two processes must never interleave. Prints ``ready`` once the engine passed its start-up
check, then waits for a line on stdin (so that both processes start together), and prints ``done``
at the end.
"""

from __future__ import annotations

import sys

import anyio

from config import StoreSettings
from store.api.store import Store
from store.models import Message, Scope
from store.osis.client import OsisEngine

SCOPE = Scope("default", "alice")


async def main(url: str, conversation: str, prefix: str, count: int) -> None:
    async with Store(OsisEngine(StoreSettings(engine="osis", url=url))) as store:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        for i in range(count):
            async with store.leases.conversation_lock(SCOPE, conversation, wait_s=60):
                await store.messages.append(
                    SCOPE,
                    Message(
                        conversation_id=conversation, role="user", content=f"{prefix}-{i}-q", channel="cli"
                    ),
                )
                await anyio.sleep(0)  # let the other process try to get in between
                await store.messages.append(
                    SCOPE,
                    Message(
                        conversation_id=conversation,
                        role="assistant",
                        content=f"{prefix}-{i}-a",
                        channel="cli",
                    ),
                )
        print("done", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    anyio.run(main, args[0], args[1], args[2], int(args[3]))
