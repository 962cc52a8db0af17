"""Fixtures of the store conformance suite: every test using ``engine``/``store`` runs per engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store.api.store import Store
from store.engine import Engine
from store.models import Scope
from tests.store.engines import ENGINES

#: the message size limit the conformance stores are built with
MAX_CHARS = 2000

ALICE = Scope("default", "alice")
BOB = Scope("default", "bob")
ALICE_ELSEWHERE = Scope("other", "alice")


@pytest.fixture(params=sorted(ENGINES))
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    async with ENGINES[request.param](tmp_path) as opened:
        yield opened


@pytest.fixture
async def store(engine: Engine) -> Store:
    return Store(engine, max_message_chars=MAX_CHARS)
