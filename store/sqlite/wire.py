"""What the embedded engine and its writer process say to each other: a batch's steps, and each
step's outcome, as bytes.

The writer process (:mod:`store.sqlite.child`) runs the engine's SQLite work in an interpreter of its
own; every call crosses a socket. Pickle would carry the same objects, but it is what made the
crossing cost: frozen dataclasses go through ``copyreg`` and records through pickle's dict machinery
(docs/performance.md, "The early request again..."). Here a step is a plain tuple (its type's index
in :data:`~store.engine.STEPS`, then its fields) and everything goes through :mod:`marshal`, which
writes tuples, lists, dicts, strings and numbers in C. Both ends run the same code (the child is
started from the daemon's own interpreter and package), so marshal's version is theirs to share;
nothing else reads these bytes, and nothing from outside is ever decoded with them.

Results are records (JSON objects as dicts), ``None``, numbers, lists of records, a
:class:`~store.engine.Page` or a :class:`~store.leases.Claimed`: the last two travel as tagged tuples
(no other result is a tuple). An error travels as its class's name and what rebuilds it.
"""

from __future__ import annotations

import dataclasses
import marshal
import struct
from collections.abc import Sequence
from typing import Any, Final

from store import errors
from store.engine import STEPS, CommitStats, ListQuery, Page, Step
from store.leases import Claimed, LeaseOwner
from store.models import Kind, Scope

#: the step types in a fixed order (both ends import the same table)
_STEP_TYPES: Final[tuple[type[Step], ...]] = tuple(sorted(STEPS, key=lambda t: t.__name__))
_STEP_INDEX: Final[dict[type[Step], int]] = {t: i for i, t in enumerate(_STEP_TYPES)}
_STEP_FIELDS: Final[tuple[tuple[str, ...], ...]] = tuple(
    tuple(f.name for f in dataclasses.fields(t))  # type: ignore[arg-type]
    for t in _STEP_TYPES
)
_QUERY_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in dataclasses.fields(ListQuery))

#: tags of the values that are not plain data (a tuple never is)
_KIND, _QUERY, _OWNER, _PAGE, _CLAIMED = "k", "q", "o", "p", "c"


def _value(v: object) -> object:
    if isinstance(v, Kind):
        return (_KIND, v.value)
    if isinstance(v, ListQuery):
        return (_QUERY, *(getattr(v, f) for f in _QUERY_FIELDS))
    if isinstance(v, LeaseOwner):
        return (_OWNER, v.host, v.pid, v.started)
    return v


def _unvalue(v: object) -> object:
    if type(v) is not tuple:
        return v
    tag = v[0]
    if tag == _KIND:
        return Kind(v[1])
    if tag == _QUERY:
        return ListQuery(*v[1:])
    if tag == _OWNER:
        return LeaseOwner(*v[1:])
    raise ValueError(f"unknown value tag {tag!r}")


def encode_batch(scope: Scope, steps: Sequence[Step]) -> bytes:
    """A batch's scope and steps as bytes (:func:`decode_batch` reads them back)."""
    encoded = [
        (_STEP_INDEX[type(s)], *(_value(getattr(s, f)) for f in _STEP_FIELDS[_STEP_INDEX[type(s)]]))
        for s in steps
    ]
    return marshal.dumps((scope.context, scope.user_id, encoded))


def decode_batch(data: bytes) -> tuple[Scope, list[Step]]:
    context, user_id, encoded = marshal.loads(data)
    steps = [_STEP_TYPES[e[0]](*(_unvalue(v) for v in e[1:])) for e in encoded]
    return Scope(context, user_id), steps


def _result(v: object) -> object:
    if isinstance(v, Page):
        return (_PAGE, v.items, v.next_cursor)
    if isinstance(v, Claimed):
        return (_CLAIMED, v.value)
    return v


def _unresult(v: object) -> object:
    if type(v) is not tuple:
        return v
    if v[0] == _PAGE:
        return Page(v[1], v[2])
    if v[0] == _CLAIMED:
        return Claimed(v[1])
    raise ValueError(f"unknown result tag {v[0]!r}")


def encode_results(results: Sequence[object]) -> bytes:
    """A batch's results, one per step (:func:`decode_results` reads them back)."""
    return marshal.dumps([_result(r) for r in results])


def decode_results(data: bytes) -> list[Any]:
    return [_unresult(r) for r in marshal.loads(data)]


#: how each error class is rebuilt: the attributes its constructor takes (else its message)
_ERROR_ARGS: Final[dict[type[errors.StoreError], tuple[str, ...]]] = {
    errors.NotFound: ("kind", "sid"),
    errors.LeaseHeld: ("key",),
    errors.LeaseLost: ("key",),
    errors.ConversationBusy: (),
    errors.ImportFormatError: ("line", "reason"),
}
_ERRORS: Final[dict[str, type[errors.StoreError]]] = {
    c.__name__: c
    for c in vars(errors).values()
    if isinstance(c, type) and issubclass(c, errors.StoreError) and c is not errors.ImportRejected
}


def encode_error(exc: BaseException) -> bytes:
    """A call's error. A store error keeps its class (and what its constructor takes); anything else
    becomes :class:`~store.errors.StoreUnavailable` naming it (a bug in the writer process is the
    operator's to read, not the caller's to handle)."""
    if isinstance(exc, errors.ImportRejected):
        problems = [(p.line, p.reason) for p in exc.problems]
        return marshal.dumps(("ImportRejected", (problems, exc.total)))
    if isinstance(exc, errors.StoreError) and type(exc).__name__ in _ERRORS:
        cls = type(exc)
        fields = _ERROR_ARGS.get(cls)
        args = tuple(getattr(exc, f) for f in fields) if fields is not None else (str(exc),)
        return marshal.dumps((cls.__name__, args))
    message = f"the embedded store's writer failed: {type(exc).__name__}: {exc}"
    return marshal.dumps(("StoreUnavailable", (message,)))


def decode_error(data: bytes) -> errors.StoreError:
    name, args = marshal.loads(data)
    if name == "ImportRejected":
        problems, total = args
        return errors.ImportRejected([errors.ImportFormatError(*p) for p in problems], total)
    return _ERRORS[name](*args)


# -- framing ----------------------------------------------------------------------------------

#: a frame's header: its type, the call's number, the payload's length
HEADER = struct.Struct("!cII")

# frames to the writer process
#: a write batch (``wire.encode_batch``), answered with RESULTS or ERROR once durable
WRITE = b"w"
#: a write batch answered early: RESULTS or ERROR as soon as it ran, then DURABLE
EARLY = b"e"
#: a batch of reads (``wire.encode_batch``), answered with RESULTS or ERROR
READ = b"r"
#: a whole-store call: a pickled ``(function, args)``, run as ``function(conn, *args)``
CALL = b"c"

# frames from the writer process
#: the database is open: payload the counters (job 0)
READY = b"O"
#: it could not be opened: payload the message (job 0)
FAILED = b"F"
#: a call's results: ``wire.encode_results`` for batches, pickle for CALL
RESULTS = b"R"
#: a call's error (``wire.encode_error``)
ERROR = b"E"
#: an early batch's commit returned: empty payload, or its error (``wire.encode_error``)
DURABLE = b"D"
#: the commit counters (``marshal`` of :func:`counters`), job 0
COUNTERS = b"T"


def frame(kind: bytes, job: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, job, len(payload)) + payload


def counters(stats: CommitStats) -> bytes:
    return marshal.dumps(dataclasses.asdict(stats))


def read_counters(payload: bytes, into: CommitStats) -> None:
    """The writer process's counters copied into the engine's (which ``/metrics`` reads)."""
    for name, value in marshal.loads(payload).items():
        if name != "writer_restarts":  # counted by the engine, not by the writer process
            setattr(into, name, value)


class Frames:
    """Frames out of a byte stream, as they come whole."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, int, bytes]]:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        size = len(buf)
        while size - pos >= HEADER.size:
            kind, job, length = HEADER.unpack_from(buf, pos)
            end = pos + HEADER.size + length
            if end > size:
                break
            out.append((kind, job, bytes(buf[pos + HEADER.size : end])))
            pos = end
        if pos:
            del buf[:pos]
        return out
