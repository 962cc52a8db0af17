"""Fixtures for the tool tests: a real embedded store in a temp dir, a tool context on it, and a
helper that serves a Starlette app on a real uvicorn bound to a chosen loopback address."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
import uvicorn
from starlette.applications import Starlette

from agent.tools.base import ToolCaller
from channels.serving import NoSignalServer
from config.settings import Settings, StoreSettings
from store import Scope, Store, open_store
from tests.waiting import until

SCOPE = Scope("work", "alice")
CERTS = Path(__file__).resolve().parents[2] / "fakes" / "certs"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    settings = replace(Settings(), store=StoreSettings(path=tmp_path / "data"))
    async with open_store(settings) as opened:
        yield opened


@pytest.fixture
async def ctx(store: Store) -> ToolCaller:
    conv = await store.conversations.create(SCOPE, "tools test", channel="cli")
    return ToolCaller(store=store, scope=SCOPE, conversation_id=conv.sid, channel="cli")


@contextlib.asynccontextmanager
async def serve(app: Starlette, host: str = "127.0.0.1", *, tls: bool = False) -> AsyncIterator[str]:
    """Run ``app`` on a real uvicorn at ``host`` (any free port); yields ``http://host:port``.

    ``tls``: serve HTTPS with ``tests/fakes/certs/server.pem`` (for ``pinned.test``, signed by
    ``ca.pem``); the yielded URL then starts with ``https://``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = NoSignalServer(
        uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
            ssl_certfile=str(CERTS / "server.pem") if tls else None,
            ssl_keyfile=str(CERTS / "server.key") if tls else None,
        )
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            await until(lambda: server.started, timeout=10, interval=0.005, what="uvicorn to start")
            try:
                scheme = "https" if tls else "http"
                yield (
                    f"{scheme}://[{host}]:{port}"
                    if family == socket.AF_INET6
                    else f"{scheme}://{host}:{port}"
                )
            finally:
                server.should_exit = True
    finally:
        sock.close()
