"""The store's error hierarchy.

::

    StoreError                      base; not user-safe unless a subclass says so
    +-- InvalidInput     (user-safe, not retryable)   bad context name, oversized content, bad field
    +-- NotFound         (user-safe, not retryable)   missing id -- and a foreign id, indistinguishably
    +-- Conflict         (user-safe, not retryable)   a lease held by someone else, a duplicate key
    |   +-- LeaseHeld                                  a batch's required lease is held by another holder
    |   +-- LeaseLost                                  a held lease lapsed and another holder took it
    +-- StoreUnavailable (user-safe, retryable)       the engine cannot be reached or is closed
    +-- ImportFormatError(user-safe, not retryable)   a malformed export line (``line`` says which)
        +-- ImportRejected                             an import refused whole: every problem found
    +-- UnsupportedOperation (user-safe, not retryable) an optional capability this engine lacks
"""

from __future__ import annotations


class StoreError(Exception):
    user_safe: bool = False
    retryable: bool = False


class InvalidInput(StoreError):
    user_safe = True


class NotFound(StoreError):
    user_safe = True

    def __init__(self, kind: str, sid: str) -> None:
        self.kind = kind
        self.sid = sid
        super().__init__(f"{kind} {sid!r} not found")


class Conflict(StoreError):
    user_safe = True


class LeaseHeld(Conflict):
    """A batch stopped at a required :class:`~store.engine.ClaimStep`: another holder has the lease."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"the lease {key!r} is held by another holder")


class LeaseLost(Conflict):
    """A held lease could not be renewed in time (the store was unreachable longer than the lease)
    and another holder took it: the block that held it was cancelled."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__("the conversation's lock was lost while the store was unreachable")


class StoreUnavailable(StoreError):
    user_safe = True
    retryable = True


class ImportFormatError(StoreError):
    user_safe = True

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}")


class UnsupportedOperation(StoreError):
    """An optional engine capability (e.g. ``rename_user``) that this engine or server does not offer."""

    user_safe = True


#: an import refusal lists at most this many problems (and counts the rest)
MAX_IMPORT_PROBLEMS = 100


class ImportRejected(ImportFormatError):
    """An import refused as a whole, nothing written: every problem found (up to
    ``MAX_IMPORT_PROBLEMS``), each naming its line. ``line``/``reason`` are the first problem's."""

    def __init__(self, problems: list[ImportFormatError], total: int) -> None:
        self.problems = problems
        self.total = total
        super().__init__(problems[0].line, problems[0].reason)
        if total > 1:
            lines = [str(p) for p in problems]
            if total > len(problems):
                lines.append(f"... and {total - len(problems)} more")
            self.args = (f"{total} problems, nothing was imported:\n" + "\n".join(lines),)
