"""Serving an ASGI app on uvicorn inside our own event loop, shared by the web channel and the
Telegram webhook.

uvicorn must not own the process's signals (the daemon does, through ``anyio.open_signal_receiver``),
and a pre-bound listening socket must say it is TCP: asyncio sets ``TCP_NODELAY`` on accepted
connections only when the listening socket's proto is ``IPPROTO_TCP``; without it every small answer
on a kept-alive connection waits ~40 ms for a delayed ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio
import uvicorn

from channels.base import ChannelCrashed

#: how often a running server's task and listening socket are checked
WATCH_INTERVAL_S = 0.25


class NoSignalServer(uvicorn.Server):
    """uvicorn without signal handling: the daemon owns SIGINT/SIGTERM and sets ``should_exit``."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listening_socket(host: str, port: int, *, backlog: int = 2048) -> socket.socket:
    """A non-blocking TCP socket listening on ``host:port`` (port 0: any free one). Raises OSError
    (``socket.gaierror`` when the host does not resolve); the caller words the error."""
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class _AcceptErrorFilter(logging.Filter):
    """Lets one asyncio "Exception in callback ..._accept_connection" record through per
    ``every_s``: on a listening socket the kernel closed, asyncio retries accept in a busy loop and
    logs a traceback each time (hundreds before the watch below notices and stops the server)."""

    def __init__(self, every_s: float = 10.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last = -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        if "_accept_connection" not in str(record.msg):
            return True
        now = time.monotonic()
        if now - self._last < self.every_s:
            return False
        self._last = now
        return True


def _quiet_accept_errors() -> None:
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, _AcceptErrorFilter) for f in asyncio_log.filters):
        asyncio_log.addFilter(_AcceptErrorFilter())


def still_listening(sock: socket.socket) -> bool:
    """Whether ``sock`` is still a listening socket (the kernel may have closed it under us, e.g.
    ``ss -K``, leaving asyncio's accept loop failing forever while uvicorn runs on)."""
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False


async def watch_server(
    task: asyncio.Task[None], sock: socket.socket, what: str, stopping: Callable[[], bool]
) -> None:
    """Return never while the server ``task`` runs and ``sock`` listens; raise ChannelCrashed (one
    line saying ``what`` died and why) when either ends, unless ``stopping()`` says the channel is
    being stopped (its own stop closes both). Stops uvicorn's accept attempts on a dead socket at
    once: asyncio would otherwise log a traceback per attempt until the server is stopped."""
    _quiet_accept_errors()
    while True:
        if stopping():
            await anyio.sleep_forever()
        if task.done():
            error = None if task.cancelled() else task.exception()
            why = f"{type(error).__name__}: {error}" if error else "it returned"
            raise ChannelCrashed(f"{what} stopped unexpectedly ({why})"[:300])
        if not still_listening(sock):
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(sock)
            raise ChannelCrashed(f"{what}: its listening socket was closed")
        await anyio.sleep(WATCH_INTERVAL_S)
