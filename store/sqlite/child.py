"""The embedded engine's writer process: one SQLite connection served on this process's main thread.

The daemon's interpreter runs its event loop, its turns and, with the writer thread, every SQLite
call's Python too, all under one interpreter lock: 200 turns opening at once wait for the writer to
get the lock back after each statement (docs/performance.md, Bursts). Here the connection has an
interpreter of its own. The engine (:mod:`store.sqlite.process`) starts this program with one end of
a socket pair::

    python -m store.sqlite.child DATA_DIR BUSY_TIMEOUT_MS FSYNC(0|1) MAX_GROUP FD [LOG]

and sends it frames (:mod:`store.sqlite.wire` for batches and their results, pickle for the rarer
whole-store calls). It serves them in the order they came, exactly as the writer thread does: write
batches found waiting together commit as one group (:mod:`store.sqlite.group`), a batch sent early
gets its results as soon as it ran and its durability after the COMMIT, and in the gaps it does the
idle work (full-text indexing the messages written). After every group and idle run it sends its
commit counters, which the engine shows in ``/metrics``.

It logs as its daemon does (``LOG``: the daemon's level and format, :func:`config.logging.child_setup`),
to the stderr it inherited, each line with ``process="store-writer"``.

It ends when the socket does: the engine closed it, or the daemon died (a ``kill -9`` included). A
group in flight then still commits, and nothing that was not answered was acknowledged.
"""

from __future__ import annotations

import functools
import os
import pickle
import select
import signal
import socket
import sys
from pathlib import Path

import structlog

from config.logging import configure_child
from store.engine import leases_only
from store.sqlite import batch as sqlite_batch
from store.sqlite import wire
from store.sqlite.engine import DB_FILE, _Database
from store.sqlite.group import Outcome, Write, store_error
from store.sqlite.wire import (
    CALL,
    COUNTERS,
    DURABLE,
    EARLY,
    ERROR,
    FAILED,
    READ,
    READY,
    RESULTS,
    WRITE,
    Frames,
    counters,
    frame,
)

log = structlog.get_logger()


class _Writer:
    """Serves one connection to the engine's socket (see the module docstring)."""

    def __init__(self, sock: socket.socket, db: _Database, max_group: int) -> None:
        self.sock = sock
        self.db = db
        #: 1: every write batch commits alone (``EmbeddedEngine(group_commit=False)``, benches only)
        self.max_group = max_group
        self.out: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.out.append(data)

    def flush(self) -> None:
        if self.out:
            self.sock.sendall(b"".join(self.out))
            self.out.clear()

    def serve(self) -> None:
        frames = Frames()
        idle: float | None = self.db.index_idle(None)
        waited = 0.0
        while True:
            if idle is not None and idle <= 0:  # due now (many rows pending): before the next call
                idle = self._idle(waited)
                continue
            readable, _, _ = select.select([self.sock], [], [], idle)
            if not readable:
                assert idle is not None  # select waits forever without a timeout
                waited += idle
                idle = self._idle(waited)
                continue
            data = self.sock.recv(1 << 20)
            if not data:
                return  # the engine closed its end, or its process died
            self._serve(frames.feed(data))
            self.flush()
            idle, waited = self.db.index_idle(None), 0.0

    def _idle(self, waited: float) -> float | None:
        wait = self.db.index_idle(waited)
        self.send(frame(COUNTERS, 0, counters(self.db.commits)))
        self.flush()
        return wait

    def _serve(self, calls: list[tuple[bytes, int, bytes]]) -> None:
        i = 0
        while i < len(calls):
            kind, job, payload = calls[i]
            if kind in (WRITE, EARLY):
                group = [calls[i]]
                i += 1
                while i < len(calls) and calls[i][0] in (WRITE, EARLY) and len(group) < self.max_group:
                    group.append(calls[i])
                    i += 1
                self._group(group)
                continue
            i += 1
            try:
                if kind == READ:
                    scope, steps = wire.decode_batch(payload)
                    results = self.db.call(sqlite_batch.batch, scope, steps, self.db.commits)
                    answer = wire.encode_results(results)
                elif kind == CALL:
                    fn, args = pickle.loads(payload)
                    answer = pickle.dumps(self.db.call(fn, *args), protocol=pickle.HIGHEST_PROTOCOL)
                else:
                    raise ValueError(f"unknown frame {kind!r}")
            except BaseException as exc:
                self.send(frame(ERROR, job, wire.encode_error(store_error(exc, self.db.path))))
            else:
                self.send(frame(RESULTS, job, answer))

    def _group(self, group: list[tuple[bytes, int, bytes]]) -> None:
        writes = []
        for kind, _, payload in group:
            scope, steps = wire.decode_batch(payload)
            run = functools.partial(sqlite_batch.run_steps, scope=scope, steps=steps, stats=self.db.commits)
            writes.append(Write(run, leases_only(steps), early=kind == EARLY))

        answered: set[int] = set()

        def ran(i: int, outcome: Outcome) -> None:
            kind, job, _ = group[i]
            if kind == EARLY:
                answered.add(i)
                self.send(_answer(job, outcome))
                self.flush()  # before the COMMIT: the turn builds its request meanwhile

        outcomes = self.db.commit_writes(writes, ran)
        for i, ((kind, job, _), outcome) in enumerate(zip(group, outcomes, strict=True)):
            if i not in answered:  # a write batch, or an early one the group failed before it ran
                self.send(_answer(job, outcome))
            if kind == EARLY:
                error = outcome[1]
                self.send(frame(DURABLE, job, b"" if error is None else wire.encode_error(error)))
        self.send(frame(COUNTERS, 0, counters(self.db.commits)))


def _answer(job: int, outcome: Outcome) -> bytes:
    result, error = outcome
    if error is not None:
        return frame(ERROR, job, wire.encode_error(error))
    return frame(RESULTS, job, wire.encode_results(result))


def main(argv: list[str]) -> int:
    data_dir, busy_timeout_ms, fsync = Path(argv[0]), int(argv[1]), argv[2] == "1"
    max_group, fd = int(argv[3]), int(argv[4])
    if len(argv) > 5:
        configure_child(argv[5], "store-writer")
    log.debug("store.writer_process_started", path=str(data_dir), pid=os.getpid())
    sock = socket.socket(fileno=fd)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        db = _Database((data_dir / DB_FILE).resolve(), busy_timeout_ms, fsync, worker=False)
    except Exception as exc:  # reported to the engine, which raises StoreUnavailable with it
        sock.sendall(frame(FAILED, 0, f"cannot open the embedded store in {data_dir}: {exc}".encode()))
        return 1
    try:
        sock.sendall(frame(READY, 0, counters(db.commits)))
        _Writer(sock, db, max_group).serve()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the engine's process is gone: nothing is waiting for an answer
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    # a Ctrl-C in the daemon's terminal reaches its whole process group, and a service manager's stop
    # every process of the service (systemd's default KillMode): the writer process ends when the
    # daemon closes its socket, not before, since the daemon may still be storing (a turn's
    # interrupted reply) while it shuts down
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    sys.exit(main(sys.argv[1:]))
