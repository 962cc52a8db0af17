"""The store's error hierarchy (under :class:`config.errors.HeroError`: each class carries its ``code``
and the sentence a user is shown).

::

    StoreError           store_failed         base; not user-safe unless a subclass says so
    +-- InvalidInput     invalid_input        (user-safe) bad context name, oversized content, bad field
    |   +-- MessageTooLarge  message_too_large  a message over the store's limit (``max_message_chars``)
    +-- NotFound         not_found            (user-safe) missing id -- and a foreign id, indistinguishably
    +-- Conflict         conflict             (user-safe) a duplicate key, a conflicting write
    |   +-- ConversationBusy busy              another turn holds the conversation past the wait
    |   +-- LeaseHeld    conflict             a batch's required lease is held by another holder
    |   +-- LeaseLost    lease_lost           a held lease lapsed and another holder took it
    +-- StoreUnavailable store_unavailable    (user-safe, retryable) the engine cannot be reached or is
    |                                         closed; users see one sentence, the message is the operator's
    +-- ImportFormatError invalid_import      (user-safe) a malformed export line (``line`` says which)
    |   +-- ImportRejected                    an import refused whole: every problem found
    +-- UnsupportedOperation unsupported      (user-safe) an optional capability this engine lacks
    +-- OsisAuthError    store_unauthorized   (user-safe) the OSIS service refused our credentials
    +-- OsisProtocolError store_protocol      (user-safe) the OSIS service answered no OSIS JSON-RPC

(``OsisAuthError`` and ``OsisProtocolError`` live in ``store/osis/protocol.py``.)
"""

from __future__ import annotations

from config.errors import HeroError


class StoreError(HeroError):
    code = "store_failed"
    sentence = "The store failed; try again shortly."


class InvalidInput(StoreError):
    code = "invalid_input"
    user_safe = True


class MessageTooLarge(InvalidInput):
    """A message longer than the store takes (the web answers 413)."""

    code = "message_too_large"


class NotFound(StoreError):
    code = "not_found"
    user_safe = True

    def __init__(self, kind: str, sid: str) -> None:
        self.kind = kind
        self.sid = sid
        super().__init__(f"{kind} {sid!r} not found")

    @property
    def user_message(self) -> str:
        # the same words for every id, missing or foreign: an answer must not tell them apart
        return f"No {self.kind} with that id."


class Conflict(StoreError):
    code = "conflict"
    user_safe = True


class ConversationBusy(Conflict):
    """Another turn held the conversation longer than the caller would wait."""

    code = "busy"
    sentence = "This conversation is busy with another turn; try again."

    def __init__(self) -> None:
        super().__init__(self.sentence)


class LeaseHeld(Conflict):
    """A batch stopped at a required :class:`~store.engine.ClaimStep`: another holder has the lease."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"the lease {key!r} is held by another holder")


class LeaseLost(Conflict):
    """A held lease could not be renewed in time (the store was unreachable longer than the lease)
    and another holder took it: the block that held it was cancelled."""

    code = "lease_lost"

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__("the conversation's lock was lost while the store was unreachable")


class StoreUnavailable(StoreError):
    """The engine cannot be reached or is closed. The message names a path or an address: it is for
    the operator (the command line, the logs); a chat user is shown ``sentence``."""

    code = "store_unavailable"
    user_safe = True
    retryable = True
    sentence = "The store is unavailable; try again shortly."

    @property
    def user_message(self) -> str:
        return self.sentence


class ImportFormatError(StoreError):
    code = "invalid_import"
    user_safe = True

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}")


class UnsupportedOperation(StoreError):
    """An optional engine capability (e.g. ``rename_user``) that this engine or server does not offer."""

    code = "unsupported"
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
