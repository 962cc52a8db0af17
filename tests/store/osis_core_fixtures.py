"""The ``osis`` engine in core mode: an OsisEngine over HTTP to the strict generated-CRUD server
(``tests/fakes/osis_generated.py``, built from ``agent_data.oschema``), which has only the five verbs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from store.engine import Engine
from store.osis.client import OsisEngine
from tests.fakes.osis_generated import GeneratedOsis
from tests.store.osis_fixtures import client_settings


@asynccontextmanager
async def generated_server() -> AsyncIterator[GeneratedOsis]:
    async with GeneratedOsis() as server:
        yield server


@asynccontextmanager
async def osis_core_engine(path: Path) -> AsyncIterator[Engine]:
    """STORE_ENGINES["osis-core"]: the client runs the seam on the generated verbs (``path`` unused:
    the strict server keeps its records in memory)."""
    async with generated_server() as server, OsisEngine(client_settings(server.base_url)) as engine:
        assert engine.mode == "core"
        yield engine
