"""Albums: photos sent together are one turn.

Telegram delivers an album as one update per photo, all sharing a ``media_group_id`` (the caption
rides on one of them, usually the first), normally in one ``getUpdates`` batch but with no promise
of it. They are collected briefly: the first part opens the album and its job takes that part's place
in the chat's queue at once, so messages sent after the album are still answered after it; further
parts join the open album; it closes when no part came for ``[telegram] media_group_wait_s``
(default 1 s) or when it holds 10 parts (Telegram's album limit). The job then runs with all parts
as one message: the images in the order they were sent, the captions joined, the first update's id
as the message's (the other updates are marked answered with it).
"""

from __future__ import annotations

import dataclasses
import time

import anyio
from anyio.abc import TaskGroup

from channels.telegram.identity import Incoming
from channels.telegram.media import Attached

#: Telegram's largest album
MAX_PARTS = 10


class Album:
    """The parts of one album seen so far; ``closed`` is set when no more will join."""

    def __init__(self, first: Incoming) -> None:
        self.parts = [first]
        self.closed = anyio.Event()
        self.last_part_at = time.monotonic()

    def join(self, part: Incoming) -> None:
        self.parts.append(part)
        self.last_part_at = time.monotonic()

    @property
    def full(self) -> bool:
        return len(self.parts) >= MAX_PARTS

    def merged(self) -> Incoming:
        """All parts as one message (see the module docstring)."""
        parts = sorted(self.parts, key=lambda p: p.message_id)
        first = parts[0]
        images = tuple(f for p in parts if p.attached is not None for f in p.attached.images)
        return dataclasses.replace(
            first,
            text="\n".join(p.text for p in parts if p.text),
            attached=Attached(images=images),
            addressed=any(p.addressed for p in parts),
            also=tuple(p.update_id for p in parts[1:]),
        )


class Albums:
    """The open albums of every chat; see the module docstring."""

    def __init__(self, task_group: TaskGroup, wait_s: float) -> None:
        self._tg = task_group
        self._wait_s = wait_s
        self._open: dict[tuple[int, str], Album] = {}

    def add(self, part: Incoming) -> Album | None:
        """The new album when ``part`` opens one (the caller queues its job); None when it joined."""
        key = (part.chat_id, part.media_group_id)
        album = self._open.get(key)
        if album is not None:
            album.join(part)
            if album.full:
                self._close(key, album)
            return None
        album = self._open[key] = Album(part)
        self._tg.start_soon(self._close_when_quiet, key, album, name=f"telegram-album-{part.chat_id}")
        return album

    async def _close_when_quiet(self, key: tuple[int, str], album: Album) -> None:
        # a debounce: each new part pushes the end out by the wait again
        while not album.closed.is_set():
            remaining = album.last_part_at + self._wait_s - time.monotonic()
            if remaining <= 0:
                self._close(key, album)
                return
            await anyio.sleep(remaining)

    def _close(self, key: tuple[int, str], album: Album) -> None:
        if self._open.get(key) is album:
            del self._open[key]
        album.closed.set()
