"""Fixtures of the store conformance suite: every test using ``engine``/``store`` runs per engine
(``store`` also on the core-only engine, through the Store's fallbacks)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from store.api.store import Store
from store.engine import Engine
from store.models import Scope
from tests.store.engines import ENGINES, NEW_SIDS, STORE_ENGINES
from tests.store.postgres_fixtures import stop_cluster

#: the message size limit the conformance stores are built with
MAX_CHARS = 2000

ALICE = Scope("default", "alice")
BOB = Scope("default", "bob")
ALICE_ELSEWHERE = Scope("other", "alice")


@pytest.fixture(scope="session", autouse=True)
def postgres_cluster() -> Iterator[None]:
    """Stops the session's PostgreSQL cluster at the end (it starts on first use)."""
    yield
    stop_cluster()


@pytest.fixture(params=sorted(ENGINES))
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    async with ENGINES[request.param](tmp_path) as opened:
        yield opened


@pytest.fixture(params=sorted(STORE_ENGINES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The Store on every engine, and on the core-only one (its fallbacks then run). A test that needs
    the engine under it uses ``store.engine`` (the ``engine`` fixture would be another engine)."""
    if "engine" in request.fixturenames:
        raise pytest.UsageError("a test takes `store` or `engine`, not both: use store.engine")
    async with STORE_ENGINES[request.param](tmp_path) as opened:
        yield Store(opened, max_message_chars=MAX_CHARS)


@pytest.fixture(params=sorted(set(STORE_ENGINES) - NEW_SIDS))
async def sid_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The Store on the engines that restore records with their own sids and move a user's records
    in one step: every engine but the osis engine in core mode, whose server allocates every sid
    (its import remaps them, and it has no rename-user: docs/osis.md, "Core mode"; tested in
    tests/store/test_osis_core.py)."""
    async with STORE_ENGINES[request.param](tmp_path) as opened:
        yield Store(opened, max_message_chars=MAX_CHARS)
