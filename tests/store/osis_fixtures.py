"""Real OSIS servers for tests: the Starlette app on a real uvicorn on 127.0.0.1, serving an embedded
engine in a tmp dir, in the test's own event loop."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from config import StoreSettings
from store.embedded import EmbeddedEngine
from store.engine import Engine
from store.osis_client import OsisEngine
from store.osis_server import bind_socket, build_app, running


@dataclass
class ServedEngine:
    engine: Engine
    port: int
    server: uvicorn.Server

    @property
    def base_url(self) -> str:
        """The ``store.url`` form: the endpoint rule adds ``_ai/rpc``."""
        return f"http://127.0.0.1:{self.port}/hero_osis"

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hero_osis_ai/rpc"


@asynccontextmanager
async def serve(
    engine: Engine, *, secret: str = "", port: int = 0, max_body: int | None = None
) -> AsyncIterator[ServedEngine]:
    """Serve an (already open) engine on 127.0.0.1:``port`` (0: a free one) until the block ends."""
    sock = bind_socket("127.0.0.1", port)
    bound = sock.getsockname()[1]
    app = (
        build_app(engine, secret=secret)
        if max_body is None
        else build_app(engine, secret=secret, max_body=max_body)
    )
    try:
        async with running(app, [sock]) as server:
            yield ServedEngine(engine, bound, server)
    finally:
        sock.close()


@asynccontextmanager
async def embedded_server(data_dir: Path, *, secret: str = "", port: int = 0) -> AsyncIterator[ServedEngine]:
    # no fsync per commit: these tests are about the protocol, not power-loss durability
    backend = EmbeddedEngine(data_dir, fsync_commits=False)
    async with backend as engine, serve(engine, secret=secret, port=port) as served:
        yield served


def client_settings(
    url: str, *, secret: str = "", retries: int = 2, timeout_s: float = 10.0
) -> StoreSettings:
    return StoreSettings(engine="osis", url=url, secret=secret, retries=retries, timeout_s=timeout_s)


@asynccontextmanager
async def osis_engine(path: Path) -> AsyncIterator[Engine]:
    """ENGINES["osis"]: an OsisEngine talking over HTTP to a server in front of an embedded engine."""
    async with (
        embedded_server(path / "osis-server") as served,
        OsisEngine(client_settings(served.base_url)) as engine,
    ):
        yield engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
