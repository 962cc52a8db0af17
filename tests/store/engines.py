"""Engine factories for the store conformance suite: name -> (tmp dir -> open engine).

Every engine listed here runs the whole suite in ``tests/store`` (the ``store``/``engine`` fixtures
of ``conftest.py`` are parametrised over this dict). A factory gets a fresh empty directory and yields
an OPEN engine, closing it (and anything it started, such as a server) on exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from store.engine import Engine
from store.sqlite.engine import EmbeddedEngine
from tests.store.osis_fixtures import osis_engine


@asynccontextmanager
async def embedded_engine(path: Path) -> AsyncIterator[Engine]:
    async with EmbeddedEngine(path) as engine:
        yield engine


ENGINES: dict[str, Callable[[Path], AbstractAsyncContextManager[Engine]]] = {
    "embedded": embedded_engine,
    # the osis engine over HTTP to a real server (uvicorn on 127.0.0.1) in front of an embedded engine
    "osis": osis_engine,
}
