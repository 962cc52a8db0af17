"""``Engine.batch``: several engine calls in one, per engine (embedded: one transaction; osis: the
default, one call per step with adjacent reads sent at once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.embedded import EmbeddedEngine
from store.engine import (
    ClaimStep,
    CountStep,
    CreateStep,
    DeleteStep,
    Engine,
    GetStep,
    ListQuery,
    ListStep,
    Page,
    ReleaseStep,
    UpdateStep,
)
from store.errors import InvalidInput, LeaseHeld, NotFound
from store.models import Kind, Record
from tests.store.conftest import ALICE, BOB

pytestmark = pytest.mark.anyio


def _state(key: str, value: str) -> Record:
    return {"key": key, "value": value}


async def test_steps_run_in_order_and_later_reads_see_earlier_writes(engine: Engine) -> None:
    kept = await engine.create(Kind.STATE, ALICE, _state("kept", "1"))
    gone = await engine.create(Kind.STATE, ALICE, _state("gone", "1"))
    results = await engine.batch(
        ALICE,
        [
            CreateStep(Kind.STATE, _state("new", "1")),
            UpdateStep(Kind.STATE, kept["sid"], {"value": "2"}),
            DeleteStep(Kind.STATE, gone["sid"]),
            GetStep(Kind.STATE, kept["sid"]),
            GetStep(Kind.STATE, gone["sid"]),
            CountStep(Kind.STATE),
            ListStep(Kind.STATE, ListQuery(filters={"key": "new"})),
        ],
    )
    created, updated, deleted, got_kept, got_gone, count, page = results
    assert isinstance(created, dict) and created["key"] == "new" and created["sid"]
    assert isinstance(updated, dict) and updated["value"] == "2"
    assert deleted is True
    assert got_kept == updated
    assert got_gone is None
    assert count == 2
    assert isinstance(page, Page) and [r["sid"] for r in page.items] == [created["sid"]]
    # and it all stayed
    assert await engine.count(Kind.STATE, ALICE) == 2


async def test_a_read_only_batch_answers_every_read(engine: Engine) -> None:
    rec = await engine.create(Kind.STATE, ALICE, _state("k", "v"))
    got, count, page = await engine.batch(
        ALICE,
        [
            GetStep(Kind.STATE, rec["sid"]),
            CountStep(Kind.STATE, {"key": "k"}),
            ListStep(Kind.STATE, ListQuery()),
        ],
    )
    assert got == rec and count == 1
    assert isinstance(page, Page) and page.items == [rec]


async def test_a_batch_stays_in_its_scope(engine: Engine) -> None:
    rec = await engine.create(Kind.STATE, ALICE, _state("k", "v"))
    got, updated, deleted, count = await engine.batch(
        BOB,
        [
            GetStep(Kind.STATE, rec["sid"]),
            UpdateStep(Kind.STATE, rec["sid"], {"value": "bob's"}),
            DeleteStep(Kind.STATE, rec["sid"]),
            CountStep(Kind.STATE),
        ],
    )
    assert (got, updated, deleted, count) == (None, None, False, 0)
    assert await engine.get(Kind.STATE, ALICE, rec["sid"]) == rec


async def test_a_refused_required_claim_stops_the_batch(engine: Engine) -> None:
    assert await engine.claim(ALICE, "lease:x", "someone else", 60_000)
    with pytest.raises(LeaseHeld) as caught:
        await engine.batch(
            ALICE,
            [ClaimStep("lease:x", "me", 60_000), CreateStep(Kind.STATE, _state("after", "1"))],
        )
    assert caught.value.key == "lease:x"
    assert await engine.count(Kind.STATE, ALICE) == 0
    # a claim that is not required answers False and the batch goes on
    taken, created = await engine.batch(
        ALICE,
        [ClaimStep("lease:x", "me", 60_000, required=False), CreateStep(Kind.STATE, _state("after", "1"))],
    )
    assert taken is False and isinstance(created, dict)


async def test_claim_and_release_steps(engine: Engine) -> None:
    assert await engine.batch(ALICE, [ClaimStep("lease:y", "me", 60_000)]) == [True]
    assert not await engine.claim(ALICE, "lease:y", "other", 60_000)
    assert await engine.batch(ALICE, [ReleaseStep("lease:y", "me")]) == [None]
    assert await engine.claim(ALICE, "lease:y", "other", 60_000)
    # releasing someone else's lease does nothing
    await engine.batch(ALICE, [ReleaseStep("lease:y", "me")])
    assert not await engine.claim(ALICE, "lease:y", "me", 60_000)


async def test_bad_input_in_a_batch_is_refused(engine: Engine) -> None:
    with pytest.raises(InvalidInput):
        await engine.batch(ALICE, [CreateStep(Kind.STATE, {"key": "k", "value": float("nan")})])
    assert await engine.count(Kind.STATE, ALICE) == 0


async def test_the_embedded_batch_is_all_or_nothing(tmp_path: Path) -> None:
    """One transaction: a step that fails undoes the steps before it (the lease included)."""
    async with EmbeddedEngine(tmp_path) as engine:
        conv = await engine.create(Kind.CONVERSATION, ALICE, {"title": "t"})
        with pytest.raises(NotFound):
            await engine.batch(
                ALICE,
                [
                    ClaimStep("turn:x", "me", 60_000),
                    CreateStep(
                        Kind.MESSAGE, {"conversation_id": conv["sid"], "role": "user", "content": "a"}
                    ),
                    CreateStep(Kind.MESSAGE, {"conversation_id": "zzzz", "role": "user", "content": "b"}),
                ],
            )
        assert await engine.count(Kind.MESSAGE, ALICE) == 0
        assert (await engine.get(Kind.CONVERSATION, ALICE, conv["sid"]) or {}).get("message_count", 0) == 0
        assert await engine.claim(ALICE, "turn:x", "someone else", 60_000)  # the lease was rolled back
