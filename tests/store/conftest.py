"""Fixtures of the store conformance suite: every test using ``engine``/``store`` runs per engine
(``store`` also on the core-only engine, through the Store's fallbacks)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store.api.store import Store
from store.engine import Engine
from store.models import Scope
from tests.store.engines import ENGINES, STORE_ENGINES

#: the message size limit the conformance stores are built with
MAX_CHARS = 2000

ALICE = Scope("default", "alice")
BOB = Scope("default", "bob")
ALICE_ELSEWHERE = Scope("other", "alice")


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
