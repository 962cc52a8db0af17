"""``Engine.batch``: several engine calls in one, per engine (embedded: one transaction; osis: one
JSON-RPC batch request after each required claim), its results read by step, and the step table every
engine's handling is checked against."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from store.engine import (
    STEPS,
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
    Results,
    StepOf,
    UpdateStep,
    check_handlers,
    row_of,
)
from store.errors import InvalidInput, LeaseHeld, NotFound
from store.leases import Claimed
from store.models import Kind, Record
from store.osis import wire
from store.sqlite import batch as sqlite_batch
from store.sqlite.engine import EmbeddedEngine
from tests.store.conftest import ALICE, BOB
from tests.store.engines import ENGINES

pytestmark = pytest.mark.anyio


@pytest.fixture(params=sorted(ENGINES))
async def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    """Every conformance engine (embedded, osis)."""
    async with ENGINES[request.param](tmp_path) as engine:
        yield engine


def _state(key: str, value: str) -> Record:
    return {"key": key, "value": value}


async def test_steps_run_in_order_and_later_reads_see_earlier_writes(any_engine: Engine) -> None:
    engine = any_engine
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


async def test_a_read_only_batch_answers_every_read(any_engine: Engine) -> None:
    engine = any_engine
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


async def test_a_batch_stays_in_its_scope(any_engine: Engine) -> None:
    engine = any_engine
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


async def test_a_refused_required_claim_stops_the_batch(any_engine: Engine) -> None:
    engine = any_engine
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
    assert taken == Claimed.REFUSED and not taken and isinstance(created, dict)


async def test_claim_and_release_steps(any_engine: Engine) -> None:
    engine = any_engine
    assert await engine.batch(ALICE, [ClaimStep("lease:y", "me", 60_000)]) == [Claimed.TAKEN]
    assert not await engine.claim(ALICE, "lease:y", "other", 60_000)
    assert await engine.batch(ALICE, [ReleaseStep("lease:y", "me")]) == [None]
    assert await engine.claim(ALICE, "lease:y", "other", 60_000)
    # releasing someone else's lease does nothing
    await engine.batch(ALICE, [ReleaseStep("lease:y", "me")])
    assert not await engine.claim(ALICE, "lease:y", "me", 60_000)


async def test_bad_input_in_a_batch_is_refused(any_engine: Engine) -> None:
    engine = any_engine
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


async def test_results_are_read_by_step(any_engine: Engine) -> None:
    engine = any_engine
    rec = await engine.create(Kind.STATE, ALICE, _state("k", "v"))
    get, count = GetStep(Kind.STATE, rec["sid"]), CountStep(Kind.STATE)
    results = await engine.batch(ALICE, [get, count])
    assert results.of(get) == rec and results.of(count) == 1
    with pytest.raises(KeyError):
        results.of(GetStep(Kind.STATE, rec["sid"]))  # an equal step, but not one of this batch


def test_every_handler_table_covers_the_step_table() -> None:
    for table in (sqlite_batch.HANDLERS, wire.PARAMS, wire.ANSWERS):
        assert set(table) == set(STEPS)
    with pytest.raises(TypeError, match="GetStep"):
        check_handlers({t: None for t in STEPS if t is not GetStep}, "an engine")


def test_a_step_outside_the_table_is_refused() -> None:
    @dataclass(frozen=True)
    class Stranger(StepOf[int]):
        n: int

    with pytest.raises(TypeError, match="not a batch step"):
        row_of(Stranger(1))


def test_results_need_one_value_per_step() -> None:
    with pytest.raises(ValueError, match="1 results for 2 steps"):
        Results([CountStep(Kind.STATE), CountStep(Kind.MEMORY)], [1])


async def test_batch_early_answers_what_batch_answers_and_when_it_is_durable(any_engine: Engine) -> None:
    """Every engine: the results of a batch, and None (durable already) or a future settled once the
    commit is durable; after it the writes are there. A batch of reads is durable at once."""
    engine = any_engine
    create = CreateStep(Kind.STATE, _state("early", "1"))
    results, durable = await engine.batch_early(ALICE, [create, CountStep(Kind.STATE, {"key": "early"})])
    assert results.of(create)["key"] == "early"
    assert results[1] == 1  # the batch's own write, seen by its read
    if durable is not None:
        await durable
        assert durable.done() and durable.exception() is None
    assert await engine.get(Kind.STATE, ALICE, results.of(create)["sid"]) == results.of(create)
    reads, none = await engine.batch_early(ALICE, [GetStep(Kind.STATE, results.of(create)["sid"])])
    assert none is None and reads[0] == results.of(create)


async def test_an_early_batch_refused_by_a_held_lease_is_answered_with_lease_held(any_engine: Engine) -> None:
    """A turn's opening whose required claim is refused (another turn holds the conversation) is
    answered, with LeaseHeld, and writes nothing: the turn waits and tries again. (The writer process
    once left such a batch unanswered: the group failed before the batch's early answer.)"""
    engine = any_engine
    assert await engine.claim(ALICE, "turn:c1", "other", 60_000)
    create = CreateStep(Kind.STATE, _state("refused", "1"))
    with anyio.fail_after(10), pytest.raises(LeaseHeld):
        await engine.batch_early(ALICE, [ClaimStep("turn:c1", "me", 60_000), create])
    assert await engine.run(ALICE, CountStep(Kind.STATE, {"key": "refused"})) == 0
    # and the engine goes on answering
    results, durable = await engine.batch_early(ALICE, [create])
    if durable is not None:
        await durable
    assert results.of(create)["key"] == "refused"


async def test_the_embedded_engine_answers_a_write_batch_early(tmp_path: Path) -> None:
    async with EmbeddedEngine(tmp_path) as engine:
        stats = engine.commit_stats()
        assert stats is not None
        before = stats.commits
        _, durable = await engine.batch_early(ALICE, [CreateStep(Kind.STATE, _state("early", "1"))])
        assert durable is not None  # settled by the worker once the COMMIT returned
        await durable
        assert stats.commits == before + 1
        assert (stats.early, stats.early_failed) == (1, 0)
