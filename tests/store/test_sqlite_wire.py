"""The embedded engine's wire to its writer process (store/sqlite/wire.py): every step type, every
kind of result and every store error come back equal to what was sent."""

from __future__ import annotations

import pytest

from store import errors
from store.engine import (
    STEPS,
    ClaimStep,
    CountStep,
    CreateStep,
    DeleteStep,
    GetStep,
    ListQuery,
    ListStep,
    MarkCutStep,
    Page,
    ReleaseStep,
    UpdateStep,
)
from store.leases import Claimed, LeaseOwner
from store.models import Kind, Scope
from store.sqlite import wire

SCOPE = Scope("team-a", "alice")
#: JSON values of every shape a record holds
RECORD = {
    "sid": "00a1",
    "content": 'héllo \u2603 \n"quoted"',
    "seq": 12,
    "big": 2**70,
    "ratio": 0.125,
    "flag": True,
    "none": None,
    "list": [1, "two", [3.5, {"four": 4}]],
    "nested": {"a": {"b": []}},
}

EVERY_STEP = [
    GetStep(Kind.MESSAGE, "00a1"),
    ListStep(Kind.MEMORY, ListQuery()),
    ListStep(
        Kind.MESSAGE,
        ListQuery(
            filters={"conversation_id": "0001", "seq__gt": 5, "role__in": ["user", "assistant"]},
            order_by="seq",
            descending=True,
            limit=200,
            cursor="c1",
            text="tea or coffee",
        ),
    ),
    CountStep(Kind.STATE),
    CountStep(Kind.MESSAGE, {"conversation_id": "0001"}),
    CreateStep(Kind.MESSAGE, RECORD),
    CreateStep(Kind.USAGE, {"tokens": 3}, request_key="turn:abc"),
    UpdateStep(Kind.CONVERSATION, "0001", {"title": "t", "model": ""}),
    DeleteStep(Kind.ATTACHMENT, "0002"),
    ClaimStep("turn:0001", "host:1:ab", 5000),
    ClaimStep("turn:0001", "h", None, required=False, owner=LeaseOwner("boot/ns", 42, 99), replace="old"),
    ReleaseStep("turn:0001", "h"),
    MarkCutStep("0001"),
    MarkCutStep("0001", "turn:abc"),
]


def test_every_step_type_is_on_the_wire() -> None:
    assert {type(s) for s in EVERY_STEP} == set(STEPS)


def test_a_batch_comes_back_equal() -> None:
    scope, steps = wire.decode_batch(wire.encode_batch(SCOPE, EVERY_STEP))
    assert scope == SCOPE
    assert steps == EVERY_STEP
    assert [type(s) for s in steps] == [type(s) for s in EVERY_STEP]
    assert isinstance(steps[0].kind, Kind)  # type: ignore[attr-defined]


def test_an_empty_batch_comes_back_empty() -> None:
    assert wire.decode_batch(wire.encode_batch(SCOPE, [])) == (SCOPE, [])


def test_every_kind_of_result_comes_back_equal() -> None:
    results = [
        RECORD,
        None,
        7,
        True,
        [RECORD, {"sid": "00a2"}],
        [],
        Page([RECORD], "next"),
        Page([], None),
        *Claimed,
    ]
    back = wire.decode_results(wire.encode_results(results))
    assert back == results
    assert [type(r) for r in back] == [type(r) for r in results]


@pytest.mark.parametrize(
    "error",
    [
        errors.NotFound("conversation", "0001"),
        errors.LeaseHeld("turn:0001"),
        errors.LeaseLost("turn:0001"),
        errors.ConversationBusy(),
        errors.Conflict("conflicting write: UNIQUE constraint failed"),
        errors.InvalidInput("field 'seq' must be an integer"),
        errors.MessageTooLarge("too long"),
        errors.StoreUnavailable("the embedded store at /x failed: disk I/O error"),
        errors.UnsupportedOperation("no"),
        errors.ImportFormatError(3, "not JSON"),
        errors.ImportRejected([errors.ImportFormatError(1, "a"), errors.ImportFormatError(2, "b")], 5),
    ],
)
def test_a_store_error_comes_back_as_itself(error: errors.StoreError) -> None:
    back = wire.decode_error(wire.encode_error(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert back.code == error.code
    for name in ("kind", "sid", "key", "line", "reason", "total"):
        assert getattr(back, name, None) == getattr(error, name, None)


def test_any_other_error_comes_back_as_the_store_being_unavailable() -> None:
    back = wire.decode_error(wire.encode_error(ZeroDivisionError("division by zero")))
    assert type(back) is errors.StoreUnavailable
    assert "ZeroDivisionError: division by zero" in str(back)
