"""Serving an ASGI app on uvicorn inside our own event loop, shared by the web channel and the
Telegram webhook.

uvicorn must not own the process's signals (the daemon does, through ``anyio.open_signal_receiver``),
and a pre-bound listening socket must say it is TCP: asyncio sets ``TCP_NODELAY`` on accepted
connections only when the listening socket's proto is ``IPPROTO_TCP``; without it every small answer
on a kept-alive connection waits ~40 ms for a delayed ACK.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


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
