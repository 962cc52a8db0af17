"""The ``embedded`` engine: SQLite (WAL, ``synchronous=FULL`` by default) in the data dir, ``hero-agent.db``.

Threading: a process holds ONE connection per database file, shared by every engine instance that
opens that file, and only ever used from that connection's own worker thread (:class:`_Worker`, one
call at a time, in order). The event loop never touches the disk. A dedicated thread fed by a queue
costs about half of what a hop through a thread pool costs (``anyio.to_thread``), and a turn makes
two such hops before its answer is out. Results come back with ``call_soon_threadsafe`` on the
caller's asyncio loop (hero-agent runs anyio on asyncio only).

Group commit: write batches that queue up while the worker is busy (a commit waiting for its fsync)
are committed together, one transaction and one fsync for many, each caller answered only once the
commit returned (:mod:`store.sqlite.group`).

Idle work: messages are full-text indexed after the transaction that stored them
(:mod:`store.sqlite.schema`). The worker does it in its gaps, in batches: once no call has come for
:data:`IDLE_S` after a write that left at least :data:`IDLE_MIN` rows pending, or for
:data:`IDLE_LONG_S` whatever is pending, it indexes up to :data:`IDLE_BATCH` rows in a transaction of
its own, and goes on while rows remain and no call is waiting. The worker counts the rows it leaves
pending itself, so a gap with fewer waits without waking it; a data dir opened is checked once. A
stream of writes that leaves no gap (a bulk load, many writers at once) gets a batch indexed before
the next call once :data:`IDLE_CAP` rows wait: the pending rows stay bounded, and the indexing is
done in batches as before, only no longer row by row in each write.

Writer process: with ``writer="process"`` (``[store] writer``) the connection is held by a process of
the engine's own instead (:mod:`store.sqlite.child`, reached through :mod:`store.sqlite.process`),
served the same way on that process's main thread; docs/store.md, "The writer process".

Processes: several may open one data dir. Each write is ``BEGIN IMMEDIATE`` (the write lock up front)
and waits up to ``busy_timeout`` for another process's transaction; see docs/store.md.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import dataclasses
import functools
import os
import pickle
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import anyio
import anyio.lowlevel
import anyio.to_thread
import structlog

from store.engine import CommitStats, Durable, Engine, Results, Step, dump_in_pages, leases_only
from store.errors import StoreUnavailable
from store.leases import Lease
from store.models import Kind, Record, Scope, validate_stored_context, validate_user
from store.sqlite import batch as sqlite_batch
from store.sqlite import leases as sqlite_leases
from store.sqlite import ops, wire
from store.sqlite import users as sqlite_users
from store.sqlite.group import MAX_GROUP, Outcome, Ran, Write, commit_group, store_error
from store.sqlite.leases import unsynced
from store.sqlite.process import WriterProcess, observed
from store.sqlite.schema import configure, configure_reader, migrate
from store.sqlite.wire import CALL, READ, WRITE

DB_FILE = "hero-agent.db"
#: who serves the connection (``EmbeddedEngine(writer=...)``, ``[store] writer``)
WRITERS = ("thread", "process")

P = ParamSpec("P")
R = TypeVar("R")
log = structlog.get_logger()


#: how long the worker waits for a call after a write before it does its idle work (indexing the
#: messages written), when :data:`IDLE_MIN` rows wait: a turn's next store call usually comes sooner
#: (its closing after the LLM's answer, or the next turn's opening) and waits for no indexing
IDLE_S = 0.0005
#: rows indexed together share one new segment of the index: fewer than this wait for company, up to
#: :data:`IDLE_LONG_S` of quiet
IDLE_MIN = 16
IDLE_LONG_S = 0.05
#: this many rows pending: a batch is indexed before the next call, even when calls are waiting
IDLE_CAP = 256
#: the most pending rows one idle run indexes (one transaction), so that a call arriving meanwhile
#: waits for little
IDLE_BATCH = 32

#: the worker's idle work: called with how long the worker has been idle (None: it just became idle,
#: and only the wait is asked), it does what is due and answers how long to wait before calling it
#: again (0.0: not at all, call it again now), or None when nothing is left until the next write
IdleWork = Callable[[float | None], float | None]


#: the worker-side time of the calling task's last call, seconds: from queueing it to the worker
#: answering (queued, running, committing), without the event loop's delay in resuming the caller
#: (``bench/turn_burst.py`` reads it to tell the writer's share from the loop's)
LAST_CALL_S: contextvars.ContextVar[float] = contextvars.ContextVar("last_call_s", default=0.0)


#: runs a group of write batches: ``(writes, ran)``, see :func:`store.sqlite.group.commit_group`
CommitWrites = Callable[[list[Write], Ran | None], list[Outcome]]


@dataclasses.dataclass(slots=True)
class _Job:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    #: a call of its own, or a write batch that may join a group commit
    call: Callable[[], Any] | Write
    #: ``perf_counter`` when queued, then the worker-side time once answered
    seconds: float = 0.0
    #: an early write (``Engine.batch_early``): settled once its commit is durable, or failed
    durable: asyncio.Future[None] | None = None
    #: (worker side) its results were answered before the COMMIT
    answered_early: bool = False

    def answer(self, result: object, error: BaseException | None) -> None:
        self.seconds = time.perf_counter() - self.seconds
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)

    def answer_durable(self, error: BaseException | None) -> None:
        assert self.durable is not None
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_settle, self.durable, None, error)


class _Worker:
    """The thread that runs every call on one connection, one at a time, in the order they came;
    write batches found waiting together go to ``commit_writes`` as one group."""

    def __init__(
        self,
        name: str,
        commit_writes: CommitWrites,
        max_group: int = MAX_GROUP,
        idle: IdleWork | None = None,
    ) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        #: 1: every write batch commits alone (the behaviour before group commit, for benches)
        self.max_group = max_group
        self._lock = threading.Lock()
        self._stopped = False
        self._commit_writes = commit_writes
        #: the idle work (see :meth:`_next`)
        self._idle = idle
        #: idle work may be waiting (at the start too: an earlier process may have left some)
        self._idle_due = idle is not None
        #: calls handed to the worker (on the event loops' side) and calls it finished (its own
        #: side, a write once its commit returned): their difference is :meth:`backlog`
        self._submitted = 0
        self._finished = 0
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[[], R] | Write) -> R:
        result, _ = await self._submit(fn, early=False)
        return cast(R, result)

    async def run_early(self, write: Write) -> tuple[Any, asyncio.Future[None]]:
        """``write``'s result once its steps ran (before its COMMIT), and a future settled once the
        COMMIT is durable (failed with the error when it is not)."""
        result, durable = await self._submit(write, early=True)
        assert durable is not None
        return result, durable

    async def _submit(
        self, call: Callable[[], Any] | Write, *, early: bool
    ) -> tuple[Any, asyncio.Future[None] | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        durable: asyncio.Future[None] | None = None
        if early:
            durable = loop.create_future()
            durable.add_done_callback(observed)  # a caller cancelled before awaiting it logs nothing
        job = _Job(loop, future, call, time.perf_counter(), durable)
        with self._lock:
            if self._stopped:
                raise StoreUnavailable("the embedded store is closed")
            self._jobs.put(job)
            self._submitted += 1
        # as with anyio.to_thread.run_sync: a cancel waits until the call has finished (a write is
        # never left running unobserved), then it is delivered
        with anyio.CancelScope(shield=True):
            result = await future
        LAST_CALL_S.set(job.seconds)  # the future is settled after answer() measured it
        await anyio.lowlevel.checkpoint_if_cancelled()
        return result, durable

    def backlog(self) -> int:
        """Calls handed to this worker and not finished yet (queued, running, or a write waiting for
        its commit). Each counter has one writer (a thread): read without the lock, it may be a call
        behind, which is all a caller deciding whether to wait for it needs."""
        return max(0, self._submitted - self._finished)

    def stop(self) -> None:
        """Serve what was queued, then end the thread. Later calls fail with StoreUnavailable."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._jobs.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _next(self) -> _Job | None:
        """The next call; while idle work is due, it runs in the gaps without one (see the module)."""
        waited = 0.0
        wait = self._run_idle(None) if self._idle_due else None
        while wait is not None:
            if wait > 0:
                try:
                    return self._jobs.get(timeout=wait)
                except queue.Empty:
                    waited += wait
            wait = self._run_idle(waited)
        self._idle_due = False
        return self._jobs.get()

    def _run_idle(self, waited: float | None) -> float | None:
        assert self._idle is not None
        try:
            return self._idle(waited)
        except Exception as exc:  # the worker lives on; the next write makes the work due again
            log.warning("store.idle_work_failed", error=str(exc))
            return None

    def _serve(self) -> None:
        job = self._next()
        while job is not None:
            call = job.call
            if not isinstance(call, Write):
                result: Any = None
                error: BaseException | None = None
                try:
                    result = call()
                except BaseException as exc:  # handed to the caller, whatever it is
                    error = exc
                # finished before the caller hears of it: a caller that goes on at once must not
                # find its own call still counted (``backlog``)
                self._finished += 1
                job.answer(result, error)
                job = self._next()
                continue
            group, job = self._group(job)
            early = any(g.durable is not None for g in group)
            ran = functools.partial(_answer_early, group) if early else None
            outcomes = self._commit_writes([cast(Write, g.call) for g in group], ran)
            self._finished += len(group)  # the commit returned (see above)
            for member, (result, error) in zip(group, outcomes, strict=True):
                if not member.answered_early:
                    member.answer(result, error)
                if member.durable is not None:
                    member.answer_durable(error)
            self._idle_due = self._idle is not None
            if job is _NO_JOB:
                job = self._next()

    def _group(self, first: _Job) -> tuple[list[_Job], _Job | None]:
        """``first`` and the write batches queued right behind it; and the job that ended the group
        (run next: order is kept), or ``_NO_JOB`` when the queue ran empty."""
        group = [first]
        while len(group) < self.max_group:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None or not isinstance(job.call, Write):
                return group, job
            group.append(job)
        return group, _NO_JOB


def _answer_early(group: list[_Job], i: int, outcome: Outcome) -> None:
    """A write of the group ran (before the group's COMMIT): an early one gets its results now (a
    failed one's error is final)."""
    member = group[i]
    if member.durable is not None:
        member.answered_early = True
        member.answer(*outcome)


#: a marker: the queue ran empty while a group was gathered
_NO_JOB = _Job(cast(asyncio.AbstractEventLoop, None), cast("asyncio.Future[Any]", None), lambda: None)


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Database:
    """One connection to one database file, shared within the process, used by its worker thread."""

    def __init__(self, path: Path, busy_timeout_ms: int, fsync_commits: bool, *, worker: bool = True) -> None:
        self.path = path
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.refs = 0
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
        try:
            wal_retries = configure(conn, busy_timeout_ms, fsync_commits=fsync_commits)
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        self.conn: sqlite3.Connection | None = conn
        #: its ``synchronous`` setting (``configure``): FULL (2) fsyncs every commit, NORMAL (1) not
        self.sync_level = 2 if fsync_commits else 1
        self.commits = CommitStats(deferred_index=True, wal_retries=wal_retries)
        #: a data dir just opened may hold rows another process left pending: checked at the first
        #: idle moment (after that, the idle work goes by ``commits.unindexed``)
        self._unchecked = True
        #: None in a writer process (:mod:`store.sqlite.child`), whose main thread calls
        #: :meth:`commit_writes`, :meth:`index_idle` and :meth:`call` itself
        self._worker = (
            _Worker(f"hero-agent-store:{path.name}", self.commit_writes, idle=self.index_idle)
            if worker
            else None
        )
        #: the reads' own connection and thread (``EmbeddedEngine.read``), beside the writes; a
        #: writer process has none (its parent holds one, :class:`_Reader`)
        self.reader: _Reader | None = None
        if worker:
            try:
                self.reader = _Reader(path, busy_timeout_ms)
            except BaseException:
                conn.close()
                raise

    @property
    def worker(self) -> _Worker:
        """The thread that serves this connection (not in a writer process)."""
        if self._worker is None:
            raise RuntimeError("this connection is served by its writer process's main thread")
        return self._worker

    def close(self) -> None:
        """Close the connection (a writer process's, at its end; the registry's go by :func:`_release`)."""
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

    def commit_writes(self, writes: list[Write], ran: Ran | None = None) -> list[Outcome]:
        """A group of write batches in one transaction (see :mod:`store.sqlite.group`)."""
        with self.lock:
            if self.conn is None:
                return [(None, StoreUnavailable("the embedded store is closed")) for _ in writes]
            return commit_group(self.conn, self.path, writes, self.commits, ran, level=self.sync_level)

    def index_idle(self, waited: float | None) -> float | None:
        """The worker's idle work (:data:`IdleWork`): full-text index up to :data:`IDLE_BATCH` pending
        messages in a transaction of its own, once :data:`IDLE_MIN` wait or the worker has been idle
        for :data:`IDLE_LONG_S`. Committed without an fsync: the index is derived, and a power cut
        that loses it leaves the rows pending, to be indexed again."""
        stats = self.commits
        estimate = stats.unindexed + (IDLE_MIN if self._unchecked else 0)
        if waited is None:  # just idle: no statement, only the wait
            if estimate <= 0:
                return None
            if estimate >= IDLE_CAP:
                return 0.0
            return IDLE_S if estimate >= IDLE_MIN else IDLE_LONG_S
        if estimate < IDLE_MIN and waited < IDLE_LONG_S:
            return IDLE_LONG_S - waited
        with self.lock:
            conn = self.conn
            if conn is None:
                return None
            self._unchecked = False
            rows = 0
            if ops.any_pending(conn):
                with unsynced(conn, True, self.sync_level), ops.write_txn(conn):
                    rows = ops.index_pending(conn, IDLE_BATCH)
            # fewer than a batch: none left (what the estimate still counted was indexed elsewhere,
            # by another process, or rolled back)
            more = rows >= IDLE_BATCH
            stats.indexed(rows, idle=True, all_done=not more)
            return IDLE_S if more else None

    def call(self, fn: Callable[Concatenate[sqlite3.Connection, P], R], *args: P.args, **kw: P.kwargs) -> R:
        with self.lock:
            return _call_on(self.conn, self.path, fn, *args, **kw)


class _Reader:
    """A read-only connection with a thread of its own (``EmbeddedEngine.read``): reads of what is
    committed that run beside the writes instead of queueing behind them. The writer thread's
    database has one; with a writer process, the engine holds one in its own process."""

    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        self.path = path
        self.lock = threading.Lock()
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
        try:
            configure_reader(conn, busy_timeout_ms)
        except BaseException:
            conn.close()
            raise
        self.conn: sqlite3.Connection | None = conn
        self.worker = _Worker(f"hero-agent-store-reads:{path.name}", _no_writes)

    def call(self, fn: Callable[Concatenate[sqlite3.Connection, P], R], *args: P.args, **kw: P.kwargs) -> R:
        with self.lock:
            return _call_on(self.conn, self.path, fn, *args, **kw)

    def close(self) -> None:
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
        self.worker.stop()


def _call_on(
    conn: sqlite3.Connection | None,
    path: Path,
    fn: Callable[Concatenate[sqlite3.Connection, P], R],
    *args: P.args,
    **kw: P.kwargs,
) -> R:
    if conn is None:
        raise StoreUnavailable("the embedded store is closed")
    try:
        return fn(conn, *args, **kw)
    except Exception as exc:  # as a write group maps them (a record that no longer parses included)
        error = store_error(exc, path)
        if error is exc:
            raise
        raise error from None


def _no_writes(writes: list[Write], ran: Ran | None = None) -> list[Outcome]:
    """The reads' thread is never given a write."""
    return [(None, StoreUnavailable("a write was sent to the reads' connection")) for _ in writes]


_registry: dict[Path, _Database] = {}
_registry_lock = threading.Lock()


def _acquire(path: Path, busy_timeout_ms: int, fsync_commits: bool) -> _Database:
    """The process's connection to ``path`` (settings of the first opener apply while it is shared)."""
    with _registry_lock:
        db = _registry.get(path)
        if db is None or db.pid != os.getpid() or db.conn is None:
            db = _Database(path, busy_timeout_ms, fsync_commits)
            _registry[path] = db
        db.refs += 1
        return db


def _release(db: _Database) -> None:
    with _registry_lock, db.lock:
        db.refs -= 1
        if db.refs > 0 or db.conn is None:
            return
        if _registry.get(db.path) is db:
            del _registry[db.path]
        db.conn.close()
        db.conn = None
    if db._worker is not None:
        db._worker.stop()
    if db.reader is not None:
        db.reader.close()


def _open(data_dir: Path, busy_timeout_ms: int, fsync_commits: bool) -> _Database:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        return _acquire((data_dir / DB_FILE).resolve(), busy_timeout_ms, fsync_commits)
    except (OSError, sqlite3.Error) as exc:
        raise StoreUnavailable(f"cannot open the embedded store in {data_dir}: {exc}") from None


def _open_reader(path: Path, busy_timeout_ms: int) -> _Reader:
    try:
        return _Reader(path, busy_timeout_ms)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open the embedded store at {path}: {exc}") from None


class EmbeddedEngine(Engine):
    """The default engine: durable, multi-process, local SQLite file in ``data_dir``."""

    name = "embedded"

    def __init__(
        self,
        data_dir: Path,
        *,
        busy_timeout_s: float = 10.0,
        fsync_commits: bool = True,
        group_commit: bool = True,
        writer: str = "thread",
    ) -> None:
        if writer not in WRITERS:
            raise ValueError(f"writer must be one of {', '.join(WRITERS)}, not {writer!r}")
        self.data_dir = Path(data_dir).expanduser()
        #: "thread": the connection is served by a thread of this process (shared by its engines);
        #: "process": by a writer process of this engine's own (:mod:`store.sqlite.child`)
        self.writer = writer
        self._proc: WriterProcess | None = None
        self._proc_stats: CommitStats | None = None
        #: one restart at a time: calls that all found the writer process gone share the new one
        self._restarting = asyncio.Lock()
        #: False: each write batch commits alone (only to measure what group commit changes)
        self.group_commit = group_commit
        self.busy_timeout_ms = int(busy_timeout_s * 1000)
        self.fsync_commits = fsync_commits
        self._db: _Database | None = None
        #: the reads' connection with a writer process (the writer thread's database holds its own)
        self._reader: _Reader | None = None

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILE

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid (``writer="process"``, open); None otherwise."""
        return self._proc.pid if self._proc is not None and not self._proc.ended else None

    async def open(self) -> None:
        if self.writer == "process":
            if self._proc is None:
                self._proc_stats = CommitStats(deferred_index=True, writer_restarts=0)
                self._proc = await self._start_writer(self._proc_stats)
                log.debug("store.opened", engine=self.name, path=str(self.db_path), writer_pid=self._proc.pid)
            if self._reader is None:  # the writer process made the schema: the file is there
                try:
                    reader = await anyio.to_thread.run_sync(_open_reader, self.db_path, self.busy_timeout_ms)
                    self._reader = reader
                except BaseException:
                    await self.aclose()  # the writer process too: the engine did not open
                    raise
            return
        if self._db is not None:
            return
        self._db = await anyio.to_thread.run_sync(
            _open, self.data_dir, self.busy_timeout_ms, self.fsync_commits
        )
        if not self.group_commit:
            self._db.worker.max_group = 1
        log.debug("store.opened", engine=self.name, path=str(self.db_path))

    async def aclose(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await anyio.to_thread.run_sync(reader.close)
        proc, self._proc = self._proc, None
        if proc is not None:
            await proc.close()
            log.debug("store.closed", engine=self.name)
        db, self._db = self._db, None
        if db is not None:
            await anyio.to_thread.run_sync(_release, db)
            log.debug("store.closed", engine=self.name)

    def _start_writer(self, stats: CommitStats) -> Awaitable[WriterProcess]:
        return WriterProcess.start(
            self.data_dir,
            self.busy_timeout_ms,
            self.fsync_commits,
            stats,
            max_group=MAX_GROUP if self.group_commit else 1,
        )

    async def _writer(self) -> WriterProcess:
        """The writer process; a new one when the last has ended (its calls failed meanwhile)."""
        proc, stats = self._proc, self._proc_stats
        if proc is None or stats is None:
            raise StoreUnavailable("the embedded store is not open")
        if not proc.ended:
            return proc
        async with self._restarting:
            proc = self._proc
            if proc is None:
                raise StoreUnavailable("the embedded store is not open")
            if not proc.ended:
                return proc  # another call started it meanwhile
            self._proc = proc = await self._start_writer(stats)
            stats.writer_restarts = (stats.writer_restarts or 0) + 1
            log.warning("store.writer_process_restarted", path=str(self.db_path), pid=proc.pid)
        return proc

    async def _send(self, kind: bytes, payload: bytes) -> bytes:
        """One call to the writer process; its answer (the writer's side timed in :data:`LAST_CALL_S`)."""
        answer, seconds = await (await self._writer()).call(kind, payload)
        LAST_CALL_S.set(seconds)
        return answer

    async def _run(self, fn: Callable[..., R], *args: object) -> R:
        if self.writer == "process":
            answer = await self._send(CALL, pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL))
            return cast(R, pickle.loads(answer))
        db = self._db
        if db is None:
            raise StoreUnavailable("the embedded store is not open")
        return await db.worker.run(functools.partial(db.call, fn, *args))

    async def ping(self) -> None:
        await self._run(_ping)

    async def checkpoint(self, *, truncate: bool = True) -> None:
        """Copy the write-ahead log into the database file (after bulk loads). With ``truncate`` the
        log file is emptied; without, it keeps its size and the next commits write over it from the
        start, as they do in a store that has been in use for a while (cheaper commits: the file's
        size does not change, so an fsync has no metadata to flush)."""
        await self._run(_checkpoint, "TRUNCATE" if truncate else "RESTART")

    async def get_lease(self, scope: Scope, key: str) -> Lease | None:
        return await self._run(sqlite_leases.get_lease, scope, key)

    async def list_leases(self, context: str, prefix: str) -> builtins.list[Lease]:
        validate_stored_context(context)
        return await self._run(sqlite_leases.list_leases, context, prefix)

    async def batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        """The whole batch in ONE transaction and one worker call (see ``sqlite_batch.batch``); a
        write batch may share its transaction and commit with others (a group commit, see
        :mod:`store.sqlite.group`), and is answered once that commit returned."""
        steps = builtins.list(steps)
        if self.writer == "process":
            kind = WRITE if sqlite_batch.writes(steps) else READ
            return Results(
                steps, wire.decode_results(await self._send(kind, wire.encode_batch(scope, steps)))
            )
        db = self._db
        if not sqlite_batch.writes(steps):
            return await self._run(sqlite_batch.batch, scope, steps, db.commits if db else None)
        if db is None:
            raise StoreUnavailable("the embedded store is not open")
        write = Write(
            functools.partial(sqlite_batch.run_steps, scope=scope, steps=steps, stats=db.commits),
            leases_only(steps),
        )
        return await db.worker.run(write)

    async def batch_early(self, scope: Scope, steps: Sequence[Step]) -> tuple[Results, Durable]:
        """A write batch answered before its group's COMMIT (see :meth:`Engine.batch_early`): the
        results, and a future settled once the COMMIT (its fsync) returned."""
        steps = builtins.list(steps)
        if self.writer == "process" and sqlite_batch.writes(steps):
            proc = await self._writer()
            answer, seconds, durable = await proc.call_early(wire.encode_batch(scope, steps))
            LAST_CALL_S.set(seconds)
            return Results(steps, wire.decode_results(answer)), durable
        db = self._db
        if not sqlite_batch.writes(steps) or db is None:
            return await self.batch(scope, steps), None
        write = Write(
            functools.partial(sqlite_batch.run_steps, scope=scope, steps=steps, stats=db.commits),
            leases_only(steps),
            early=True,
        )
        result, durable = await db.worker.run_early(write)
        return cast(Results, result), durable

    async def read(self, scope: Scope, steps: Sequence[Step]) -> Results:
        """On the reads' own connection and thread: a snapshot of what is committed, beside the writes
        (see :meth:`Engine.read`). A search of messages whose indexing may be pending goes through
        :meth:`batch` (it indexes them first: a write)."""
        steps = builtins.list(steps)
        reader = self._reader if self.writer == "process" else self._db.reader if self._db else None
        if reader is None or sqlite_batch.writes(steps) or sqlite_batch.needs_index(steps):
            return await self.batch(scope, steps)
        return await reader.worker.run(functools.partial(reader.call, sqlite_batch.batch, scope, steps))

    def backlog(self) -> int:
        """This process's calls waiting for or on the store's writer (its thread, or calls sent to
        the writer process and not answered yet; see :meth:`Engine.backlog`)."""
        if self._proc is not None:
            return self._proc.backlog()
        db = self._db
        return db.worker.backlog() if db is not None else 0

    @staticmethod
    def last_call_seconds() -> float:
        """The worker's side of the calling task's last call (:data:`LAST_CALL_S`), seconds."""
        return LAST_CALL_S.get()

    def commit_stats(self) -> CommitStats | None:
        if self.writer == "process":
            return self._proc_stats
        return self._db.commits if self._db is not None else None

    async def contexts(self) -> builtins.list[str]:
        return await self._run(ops.contexts)

    async def dump(self, context: str) -> AsyncIterator[tuple[Kind, Record]]:
        async def read_page(kind: Kind, after: str, limit: int) -> list[Record]:
            return await self._run(ops.dump_page, kind, context, after, limit)

        async for item in dump_in_pages(context, read_page):
            yield item

    async def restore_batch(self, items: Sequence[tuple[Kind, Record]]) -> int:
        """All of ``items`` in ONE transaction: all written or none."""
        return await self._run(ops.restore_batch, list(items))

    async def rename_user(self, context: str, old: str, new: str, *, merge: bool = False) -> dict[str, int]:
        """One transaction (see ``sqlite_users``)."""
        validate_stored_context(context)
        return await self._run(
            sqlite_users.rename_user, context, validate_user(old), validate_user(new), merge
        )


def _ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


def _checkpoint(conn: sqlite3.Connection, mode: str) -> None:
    conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
