"""The embedded engine's side of its writer process (:mod:`store.sqlite.child`).

:class:`WriterProcess` starts the child with one end of a socket pair, sends it each call as a frame
and settles the caller's future from the answer, in :meth:`data_received` on the event loop (no
reader task, no thread). A batch answered early gets a second future, settled by its DURABLE frame.

When the child ends (a crash, a ``kill -9``), every call still waiting fails with
:class:`~store.errors.StoreUnavailable`: none of them was acknowledged, and a write whose answer
never came was either committed whole or not at all. The engine starts a new child at its next call
(``restarts`` counts them).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import structlog

from config.logging import child_setup
from store.engine import CommitStats
from store.errors import StoreError, StoreUnavailable
from store.sqlite import wire
from store.sqlite.group import MAX_GROUP

log = structlog.get_logger()

#: how long closing waits for the child to finish its last group and exit before killing it
STOP_S = 10.0


class WriterProcess(asyncio.Protocol):
    """One running writer process and the calls waiting on it."""

    def __init__(self, data_dir: Path, stats: CommitStats) -> None:
        self.data_dir = data_dir
        #: the child's commit counters, copied in from its COUNTERS frames (``/metrics``)
        self.stats = stats
        self._frames = wire.Frames()
        self._jobs = 0
        self._waiting: dict[int, asyncio.Future[tuple[bytes, float]]] = {}
        self._durable: dict[int, asyncio.Future[None]] = {}
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._proc: asyncio.subprocess.Process | None = None
        #: the child has ended (or was never started): calls fail, the engine starts a new one
        self.ended = False

    @classmethod
    async def start(
        cls,
        data_dir: Path,
        busy_timeout_ms: int,
        fsync_commits: bool,
        stats: CommitStats,
        *,
        max_group: int = MAX_GROUP,
    ) -> WriterProcess:
        """Start the child and wait until it has opened (and upgraded) the database."""
        self = cls(data_dir, stats)
        ours, theirs = socket.socketpair()
        try:
            with theirs:
                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "store.sqlite.child",
                    str(data_dir),
                    str(busy_timeout_ms),
                    "1" if fsync_commits else "0",
                    str(max_group),
                    str(theirs.fileno()),
                    child_setup(),  # it logs as this process does
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                )
            loop = asyncio.get_running_loop()
            await loop.create_connection(lambda: self, sock=ours)
        except OSError as exc:
            ours.close()
            raise StoreUnavailable(f"cannot start the embedded store's writer process: {exc}") from None
        try:
            await self._ready
        except BaseException:
            await self.close()
            raise
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def backlog(self) -> int:
        """Calls sent and not answered, and early writes whose commit has not returned."""
        return len(self._waiting) + len(self._durable)

    # -- calls ---------------------------------------------------------------------------------

    async def call(self, kind: bytes, payload: bytes) -> tuple[bytes, float]:
        """Send one call; its RESULTS payload and the seconds until it came in (without the event
        loop's delay in resuming the caller), or its error raised. Like the writer thread's calls, a
        cancel waits until the call has been answered (a write is never left unobserved)."""
        sent = time.perf_counter()
        answer, _ = self._send(kind, payload, early=False)
        return await _answered(answer, sent)

    async def call_early(self, payload: bytes) -> tuple[bytes, float, asyncio.Future[None]]:
        """An early write batch: its results once it ran (and the seconds until then), and a future
        settled once its commit returned (failed with the error when it did not)."""
        sent = time.perf_counter()
        answer, durable = self._send(wire.EARLY, payload, early=True)
        assert durable is not None
        result, seconds = await _answered(answer, sent)
        return result, seconds, durable

    def _send(
        self, kind: bytes, payload: bytes, *, early: bool
    ) -> tuple[asyncio.Future[tuple[bytes, float]], asyncio.Future[None] | None]:
        if self.ended or self._transport is None:
            raise StoreUnavailable(f"the embedded store's writer process for {self.data_dir} has ended")
        self._jobs += 1
        job = self._jobs
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[bytes, float]] = loop.create_future()
        self._waiting[job] = answer
        durable: asyncio.Future[None] | None = None
        if early:
            durable = loop.create_future()
            durable.add_done_callback(observed)  # a caller cancelled before awaiting it logs nothing
            self._durable[job] = durable
        self._transport.write(wire.frame(kind, job, payload))
        return answer, durable

    # -- the protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        for kind, job, payload in self._frames.feed(data):
            if kind == wire.RESULTS:
                _settle(self._waiting.pop(job, None), payload)
            elif kind == wire.ERROR:
                _fail(self._waiting.pop(job, None), wire.decode_error(payload))
            elif kind == wire.DURABLE:
                durable = self._durable.pop(job, None)
                if payload:
                    _fail(durable, wire.decode_error(payload))
                elif durable is not None and not durable.done():
                    durable.set_result(None)
            elif kind == wire.COUNTERS:
                wire.read_counters(payload, self.stats)
            elif kind == wire.READY:
                wire.read_counters(payload, self.stats)
                if not self._ready.done():
                    self._ready.set_result(None)
            elif kind == wire.FAILED and not self._ready.done():
                self._ready.set_exception(StoreUnavailable(payload.decode(errors="replace")))

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        gone = StoreUnavailable(f"the embedded store's writer process for {self.data_dir} ended")
        if not self._ready.done():
            self._ready.set_exception(gone)
        waiting, durable = list(self._waiting.values()), list(self._durable.values())
        self._waiting.clear()
        self._durable.clear()
        for future in waiting:
            _fail(future, gone)
        for d in durable:
            _fail(d, gone)

    async def close(self) -> None:
        """Close the socket: the child finishes what it was sent, closes the database and exits."""
        self.ended = True
        if self._transport is not None:
            self._transport.close()
        proc = self._proc
        if proc is None:
            return
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(STOP_S):
                await proc.wait()
                return
            log.warning("store.writer_process_kill", pid=proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def _answered(answer: asyncio.Future[tuple[bytes, float]], sent: float) -> tuple[bytes, float]:
    """A call's answer and the seconds from ``sent`` until it came in; a cancel waits for it."""
    with anyio.CancelScope(shield=True):
        result, answered = await answer
    await anyio.lowlevel.checkpoint_if_cancelled()
    return result, answered - sent


def _settle(future: asyncio.Future[tuple[bytes, float]] | None, payload: bytes) -> None:
    if future is not None and not future.done():
        future.set_result((payload, time.perf_counter()))


def _fail(
    future: asyncio.Future[tuple[bytes, float]] | asyncio.Future[None] | None, error: StoreError
) -> None:
    if future is not None and not future.done():
        future.set_exception(error)


def observed(future: asyncio.Future[None]) -> None:
    """A durability future's done-callback: its error counts as retrieved, so that a caller
    cancelled before awaiting it leaves nothing logged (the writer thread's futures use it too)."""
    if not future.cancelled():
        future.exception()
