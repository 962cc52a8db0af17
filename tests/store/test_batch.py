"""``Engine.batch``: several engine calls in one, per engine (embedded: one transaction; osis: one
JSON-RPC batch request after each required claim) and for the ABC's own default (one call per step,
adjacent reads at once), run by an engine that delegates every call to a real embedded engine and
does not override ``batch``."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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
from store.models import JSON, Kind, Record, Scope
from store.sqlite.engine import EmbeddedEngine
from tests.store.conftest import ALICE, BOB
from tests.store.engines import ENGINES

pytestmark = pytest.mark.anyio


class _DefaultBatch(Engine):
    """Every engine call goes to a real embedded engine; ``batch`` is the ABC's default."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.reads_in_flight = 0
        self.most_reads_at_once = 0

    async def open(self) -> None:
        await self.inner.open()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def get(self, kind: Kind, scope: Scope, sid: str) -> Record | None:
        self.reads_in_flight += 1
        self.most_reads_at_once = max(self.most_reads_at_once, self.reads_in_flight)
        try:
            return await self.inner.get(kind, scope, sid)
        finally:
            self.reads_in_flight -= 1

    async def create(
        self, kind: Kind, scope: Scope, fields: Record, *, request_key: str | None = None
    ) -> Record:
        return await self.inner.create(kind, scope, fields, request_key=request_key)

    async def update(self, kind: Kind, scope: Scope, sid: str, fields: Record) -> Record | None:
        return await self.inner.update(kind, scope, sid, fields)

    async def delete(self, kind: Kind, scope: Scope, sid: str) -> bool:
        return await self.inner.delete(kind, scope, sid)

    async def list(self, kind: Kind, scope: Scope, query: ListQuery) -> Page[Record]:
        return await self.inner.list(kind, scope, query)

    async def count(self, kind: Kind, scope: Scope, filters: dict[str, JSON] | None = None) -> int:
        return await self.inner.count(kind, scope, filters)

    async def claim(self, scope: Scope, key: str, holder: str, ttl_ms: int | None) -> bool:
        return await self.inner.claim(scope, key, holder, ttl_ms)

    async def release(self, scope: Scope, key: str, holder: str) -> None:
        await self.inner.release(scope, key, holder)

    async def contexts(self) -> builtins.list[str]:
        return await self.inner.contexts()

    async def dump(self, context: str) -> AsyncIterator[tuple[Kind, Record]]:
        async for item in self.inner.dump(context):
            yield item

    async def restore(self, kind: Kind, record: Record) -> bool:
        return await self.inner.restore(kind, record)


@pytest.fixture(params=[*sorted(ENGINES), "default"])
async def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    """The conformance engines (embedded, osis), then the ABC's default batch."""
    if request.param in ENGINES:
        async with ENGINES[request.param](tmp_path) as engine:
            yield engine
        return
    async with _DefaultBatch(EmbeddedEngine(tmp_path / "default")) as default:
        yield default


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
    assert taken is False and isinstance(created, dict)


async def test_claim_and_release_steps(any_engine: Engine) -> None:
    engine = any_engine
    assert await engine.batch(ALICE, [ClaimStep("lease:y", "me", 60_000)]) == [True]
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


async def test_the_default_sends_adjacent_reads_at_once_and_stops_at_the_first_failure(
    tmp_path: Path,
) -> None:
    async with _DefaultBatch(EmbeddedEngine(tmp_path)) as engine:
        recs = [await engine.create(Kind.STATE, ALICE, _state(f"k{i}", "v")) for i in range(3)]
        got = await engine.batch(ALICE, [GetStep(Kind.STATE, r["sid"]) for r in recs])
        assert got == recs and engine.most_reads_at_once == 3
        with pytest.raises(NotFound):
            await engine.batch(
                ALICE,
                [
                    CreateStep(Kind.STATE, _state("before", "1")),
                    CreateStep(Kind.MESSAGE, {"conversation_id": "zzzz", "role": "user", "content": "x"}),
                    CreateStep(Kind.STATE, _state("after", "1")),
                ],
            )
        keys = {r["key"] for r in (await engine.list(Kind.STATE, ALICE, ListQuery(limit=50))).items}
        assert "before" in keys and "after" not in keys  # done before the failure, not after it
