"""Per-chat ordering with bounded concurrency across chats.

Every chat has a FIFO of jobs and at most one worker draining it, so a chat's messages are answered in
the order they arrived. Workers exist only while their chat has work. A capacity limiter bounds how
many jobs (turns) run at the same time over all chats.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

import anyio
import structlog
from anyio.abc import TaskGroup

log = structlog.get_logger("channels.telegram")

Job = Callable[[], Awaitable[None]]


class ChatQueues:
    """One ordered queue per chat; see the module docstring."""

    def __init__(self, task_group: TaskGroup, max_concurrent: int) -> None:
        self._tg = task_group
        self._limiter = anyio.CapacityLimiter(max(1, max_concurrent))
        self._queues: dict[int, deque[Job]] = {}
        self._idle = anyio.Event()
        self._idle.set()
        self.accepting = True

    def submit(self, chat_id: int, job: Job) -> bool:
        """Queue ``job`` for ``chat_id`` (synchronously, so arrival order is kept). False once closed."""
        if not self.accepting:
            return False
        queue = self._queues.get(chat_id)
        if queue is not None:
            queue.append(job)
            return True
        self._queues[chat_id] = deque([job])
        if self._idle.is_set():
            self._idle = anyio.Event()
        self._tg.start_soon(self._drain, chat_id, name=f"telegram-chat-{chat_id}")
        return True

    @property
    def busy_chats(self) -> int:
        return len(self._queues)

    async def _drain(self, chat_id: int) -> None:
        queue = self._queues[chat_id]
        try:
            while queue:
                job = queue[0]
                async with self._limiter:
                    try:
                        await job()
                    except Exception:
                        # one failed job must not stop the chat's later messages
                        log.exception("telegram.job_failed", chat_id=chat_id)
                queue.popleft()
        finally:
            del self._queues[chat_id]
            if not self._queues:
                self._idle.set()

    async def drain(self, deadline: float) -> bool:
        """Stop taking jobs and wait up to ``deadline`` seconds for the queued ones; True if all ran."""
        self.accepting = False
        with anyio.move_on_after(deadline):
            await self._idle.wait()
            return True
        return False
