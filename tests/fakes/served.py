"""Serving a Starlette app of a fake on a real uvicorn: in the current event loop (``async with``) or
from a thread with its own loop (``running_in_thread``, for benches and synchronous clients)."""

from __future__ import annotations

import contextlib
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from typing import Self

import anyio
import uvicorn
from starlette.applications import Starlette

from channels.serving import NoSignalServer
from tests.waiting import until


class _QuietServer(NoSignalServer):
    """uvicorn that leaves the process's signal handlers alone and stops quickly."""

    async def main_loop(self) -> None:
        # uvicorn polls should_exit every 100 ms; tests start and stop a server each, so poll faster
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            await anyio.sleep(0.01)


class ServedApp(ABC):
    """Mixin: subclasses provide :meth:`build_app` and may react to the bound port in :meth:`on_bound`."""

    port: int = 0
    _closing: bool = False

    @abstractmethod
    def build_app(self) -> Starlette:
        """The fake's routes."""

    def on_bound(self, port: int) -> None:  # noqa: B027 - an optional hook, empty by default
        """Called once the listening socket is bound (``port`` is the real one)."""

    @contextlib.asynccontextmanager
    async def _serving(self, port: int = 0) -> AsyncIterator[Self]:
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when proto is TCP;
        # without it every keep-alive request waits ~40 ms for a delayed ACK (Nagle)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        self.on_bound(self.port)
        config = uvicorn.Config(
            self.build_app(),
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
            backlog=2048,
        )
        server = _QuietServer(config)
        self._closing = False
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: server.serve(sockets=[sock]))
                await until(lambda: server.started, timeout=10, interval=0.005, what="uvicorn to start")
                try:
                    yield self
                finally:
                    self._closing = True
                    server.should_exit = True
        finally:
            sock.close()

    async def __aenter__(self) -> Self:
        self._stack = contextlib.AsyncExitStack()
        await self._stack.enter_async_context(self._serving())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @contextlib.contextmanager
    def running_in_thread(self) -> Iterator[Self]:
        """Serve from a thread with its own event loop (benches, subprocess clients)."""
        started, stop = threading.Event(), threading.Event()
        failure: list[BaseException] = []

        async def run() -> None:
            async with self._serving():
                started.set()
                while not stop.is_set():
                    await anyio.sleep(0.02)

        def main() -> None:
            try:
                anyio.run(run)
            except BaseException as exc:  # surfaced in the caller's thread below
                failure.append(exc)
                started.set()

        thread = threading.Thread(target=main, name=type(self).__name__, daemon=True)
        thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        try:
            yield self
        finally:
            stop.set()
            thread.join(10)
