"""Engine factories for the store conformance suite: name -> (tmp dir -> open engine).

Every engine listed here runs the whole suite in ``tests/store`` (the ``store``/``engine`` fixtures
of ``conftest.py`` are parametrised over this dict). A factory gets a fresh empty directory and yields
an OPEN engine, closing it (and anything it started, such as a server) on exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from store.engine import Capabilities, DelegatingEngine, Engine, Results, Step
from store.errors import StoreError
from store.models import Scope
from store.sqlite.engine import EmbeddedEngine
from tests.store.osis_core_fixtures import osis_core_engine
from tests.store.osis_fixtures import osis_engine
from tests.store.postgres_fixtures import postgres_engine


@asynccontextmanager
async def embedded_engine(path: Path) -> AsyncIterator[Engine]:
    async with EmbeddedEngine(path) as engine:
        yield engine


@asynccontextmanager
async def embedded_process_engine(path: Path) -> AsyncIterator[Engine]:
    """The embedded engine with its connection in a writer process (store/sqlite/child.py)."""
    async with EmbeddedEngine(path, writer="process") as engine:
        yield engine


class CoreEngine(DelegatingEngine):
    """A real embedded engine that declares (and has) only the core capabilities: no counts, no text
    search, no leases, no atomic batch. A step outside them is refused, so that a passing test shows
    the Store's fallback ran (``store.api.fallbacks``)."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self.name = "core"
        self.capabilities = Capabilities(atomic_batch=False, leases=False, counts=False, text_search=False)

    async def batch(self, scope: Scope, steps: Sequence[Step]) -> Results:
        refused = [step for step in steps if not self.capabilities.runs(step)]
        if refused:
            raise StoreError(f"the core engine has no {type(refused[0]).__name__}")
        out: list[object] = []
        for step in steps:  # one by one: not atomic, as declared
            out += await self.inner.batch(scope, [step])
        return Results(steps, out)


@asynccontextmanager
async def core_engine(path: Path) -> AsyncIterator[Engine]:
    async with CoreEngine(EmbeddedEngine(path)) as engine:
        yield engine


ENGINES: dict[str, Callable[[Path], AbstractAsyncContextManager[Engine]]] = {
    "embedded": embedded_engine,
    "embedded-process": embedded_process_engine,
    # the osis engine over HTTP to a real server (uvicorn on 127.0.0.1) in front of an embedded engine
    "osis": osis_engine,
    # the postgres engine on a database of its own in the session's throwaway cluster
    "postgres": postgres_engine,
}
#: the engines the Store-level tests run on: every engine, the embedded one with only the core
#: capabilities (the Store's fallbacks do the rest), and the osis engine in core mode on the strict
#: generated-CRUD server (its differences: docs/osis.md, "Core mode")
STORE_ENGINES = {**ENGINES, "core": core_engine, "osis-core": osis_core_engine}
#: engines whose server allocates every sid (an import gets new ones; see the ``sid_store`` fixture)
NEW_SIDS = frozenset({"osis-core"})
