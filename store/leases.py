"""Who holds a lease, and whether that holder is known to be dead.

A turn lease (``turn:<conversation>``) is short (:data:`LEASE_S`) and renewed while its turn runs, so
a holder that dies lets go at most that long after its last renewal, whatever the host. A holder on
THIS host can do better: the lease carries its :class:`LeaseOwner` (the kernel's boot id, the pid
namespace, the pid and the process start time), and a claimer that finds the pid gone, or reused by a
younger process, takes the lease over at once. Only the claimer can tell (a remote store cannot see
this host's processes), so the take-over is a compare-and-swap: ``claim(..., replace=dead_holder)``
succeeds only while the lease is still that dead holder's, and of two claimers racing for it, one
wins and the other finds a live holder.

The pid namespace is part of the host identity because containers on one machine share the boot id
but not their process tables: a process in another container must never look dead to us.
"""

from __future__ import annotations

import functools
import os
from collections import defaultdict
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import anyio

#: a lease lapses this long after its holder's last renewal (the longest a dead holder on another
#: host can block a conversation)
LEASE_S = 5.0
#: a holder renews once this share of its lease has passed (a shorter turn writes nothing extra)
RENEW_FRACTION = 1 / 3

_PROC = Path("/proc")


class Claimed(StrEnum):
    """What a claim did. Truthy exactly when the lease is now the claimer's (``REFUSED`` is "")."""

    REFUSED = ""
    #: the lease was free
    TAKEN = "taken"
    #: the claimer already held it (its expiry moved on)
    RENEWED = "renewed"
    #: another holder's lease had lapsed
    LAPSED = "lapsed"
    #: the ``replace`` holder (found dead by the claimer) still had it
    REPLACED = "replaced"


@dataclass
class LeaseStats:
    """Counters of one Store's leases and cut-turn marks, shown in ``/metrics``."""

    #: take-overs by reason: ``dead_holder`` (same host, process gone), ``lapsed`` (lease expired)
    takeovers: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    renewals: int = 0
    #: renewals refused because another holder had taken the lapsed lease
    lost: int = 0
    #: interrupted markers written, by kind: ``user`` (assistant marker), ``tool`` (missing result)
    markers: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: stop requests written for a turn another process runs, and found for a turn of this one
    stops_written: int = 0
    stops_seen: int = 0

    def claimed(self, outcome: str) -> None:
        if outcome == Claimed.REPLACED:
            self.takeovers["dead_holder"] += 1
        elif outcome == Claimed.LAPSED:
            self.takeovers["lapsed"] += 1

    def marked(self, created: object) -> None:
        for rec in created if isinstance(created, list) else ():
            if isinstance(rec, dict):
                self.markers["tool" if rec.get("role") == "tool" else "user"] += 1


@dataclass(frozen=True, slots=True)
class LeaseOwner:
    """The process behind a holder: ``host`` is ``<boot id>/<pid namespace>``, ``started`` the
    process start time in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""

    host: str
    pid: int
    started: int

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "started": self.started}

    @classmethod
    def from_json(cls, value: object) -> LeaseOwner | None:
        """The owner a JSON object describes; None for anything malformed (treated as unknown)."""
        if not isinstance(value, dict):
            return None
        host, pid, started = value.get("host"), value.get("pid"), value.get("started")
        if not isinstance(host, str) or not host or not _is_int(pid) or not _is_int(started):
            return None
        assert isinstance(pid, int) and isinstance(started, int)
        return cls(host, pid, started)


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease as the store holds it. ``expires_in_ms``: None never expires; <= 0 has lapsed."""

    user_id: str
    key: str
    holder: str
    owner: LeaseOwner | None
    expires_in_ms: int | None

    @property
    def lapsed(self) -> bool:
        return self.expires_in_ms is not None and self.expires_in_ms <= 0

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "key": self.key,
            "holder": self.holder,
            "owner": self.owner.to_json() if self.owner else None,
            "expires_in_ms": self.expires_in_ms,
        }

    @classmethod
    def from_json(cls, value: object) -> Lease:
        """The lease a JSON object describes; ValueError when it is not one."""
        if not isinstance(value, dict):
            raise ValueError("a lease must be an object")
        user_id, key, holder = value.get("user_id"), value.get("key"), value.get("holder")
        expires = value.get("expires_in_ms")
        if not all(isinstance(v, str) for v in (user_id, key, holder)):
            raise ValueError("a lease needs user_id, key and holder strings")
        if expires is not None and not _is_int(expires):
            raise ValueError("a lease's expires_in_ms must be an integer or null")
        return cls(str(user_id), str(key), str(holder), LeaseOwner.from_json(value.get("owner")), expires)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (which may hold spaces and parentheses)."""
    text = _read(_PROC / str(pid) / "stat")
    if text is None or ")" not in text:
        return None
    return text.rsplit(")", 1)[1].split()


@functools.cache
def this_host() -> str | None:
    """``<boot id>/<pid namespace>`` of this process; None where /proc does not tell (not Linux)."""
    boot = _read(_PROC / "sys" / "kernel" / "random" / "boot_id")
    try:
        namespace = os.readlink(_PROC / "self" / "ns" / "pid")
    except OSError:
        return None
    return f"{boot.strip()}/{namespace}" if boot and boot.strip() else None


def owner_of(pid: int) -> LeaseOwner | None:
    """The identity of process ``pid`` on this host; None when it does not exist or /proc is absent."""
    host = this_host()
    fields = _stat_fields(pid)
    # fields[0] is the state (field 3), so the start time (field 22) is fields[19]
    if host is None or fields is None or len(fields) < 20 or not fields[19].isdigit():
        return None
    return LeaseOwner(host, pid, int(fields[19]))


def this_process() -> LeaseOwner | None:
    """This process's identity (computed per call: a forked child is another process)."""
    return owner_of(os.getpid())


def known_dead(owner: LeaseOwner | None) -> bool:
    """True only when ``owner`` ran on this host and that process is gone (no such pid, a pid reused
    by a process started at another time, or a zombie). Unknown or foreign owners are not known dead:
    their leases only lapse."""
    if owner is None or owner.host != this_host():
        return False
    fields = _stat_fields(owner.pid)
    if fields is None or len(fields) < 20:
        return True
    state, started = fields[0], fields[19]
    return state in ("Z", "X", "x") or started != str(owner.started)


class KeyedLocks:
    """One in-process lock per key, dropped again when nobody holds or waits for it: keys are
    conversations, and a plain dict of locks would keep one per conversation ever served for the
    daemon's whole life. The user count is taken before any await, so two tasks asking for one key
    always share one lock."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        # fast: a free lock is taken without a trip through the event loop (a cancel is still seen)
        lock, users = self._locks.get(key) or (anyio.Lock(fast_acquire=True), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
