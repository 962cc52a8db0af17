"""The checks of restoring one record as-is (``Engine.restore_batch``, the last step of an import), the
same on every engine; each engine reads what they compare against in its own transaction.

The whole file was checked before (:mod:`store.transfer_check`); these are the rules a record must meet
however it reaches an engine, said the same way whichever engine refuses it.
"""

from __future__ import annotations

from store.errors import Conflict, InvalidInput
from store.models import Kind, Record, Scope, validate_sid, validate_stored_context, validate_user


def target(kind: Kind, rec: object) -> tuple[str, Scope]:
    """The sid and scope of a record to restore, with its timestamps checked."""
    if not isinstance(rec, dict):
        raise InvalidInput("a record must be a JSON object")
    # the validators check the type too (a value read from a file can be anything)
    sid = validate_sid(rec.get("sid"))  # type: ignore[arg-type]
    scope = Scope(validate_stored_context(rec.get("context")), validate_user(rec.get("user_id")))  # type: ignore[arg-type]
    for name in ("created_at", "updated_at"):
        if not isinstance(rec.get(name), int) or isinstance(rec.get(name), bool):
            raise InvalidInput(f"{kind.value} {sid}: {name} must be an integer")
    return sid, scope


def unchanged(kind: Kind, sid: str, scope: Scope, current: Record | None, rec: Record) -> bool:
    """True when ``current`` (what the context holds under ``sid``, None for nothing) is ``rec``
    already: nothing to write. A sid another user holds is a :class:`Conflict`."""
    if current is None:
        return False
    if current == rec:
        return True
    if current.get("user_id") != scope.user_id:
        raise Conflict(f"{kind.value} {sid} already belongs to another user in {scope.context!r}")
    return False


def conversation_of(sid: str, rec: Record) -> str:
    """The conversation of a message to restore (then the engine checks that the scope holds it)."""
    conv = rec.get("conversation_id")
    if not isinstance(conv, str):
        raise missing_conversation(sid, conv)
    return conv


def missing_conversation(sid: str, conv: object) -> InvalidInput:
    return InvalidInput(f"message {sid}: its conversation {conv!r} is missing")


def seq_of(sid: str, rec: Record) -> int:
    seq = rec.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise InvalidInput(f"message {sid}: seq must be a positive integer")
    return seq


def check_seq_free(sid: str, conv: str, seq: int, holder: str | None) -> None:
    """Refuse a seq another message of the conversation holds (``holder``), said here rather than by
    the engine's UNIQUE index, whose error text means nothing to a user."""
    if holder is not None and holder != sid:
        raise Conflict(f"message {sid}: seq {seq} of conversation {conv!r} is held by message {holder}")
