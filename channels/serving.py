"""Serving an ASGI app on uvicorn inside our own event loop: :class:`ServedApp`, the one way the web
channel, the Telegram webhook and ``hero-agent osis serve`` serve their apps (bind, serve, report a
crash after start, stop).

uvicorn must not own the process's signals (the daemon does, through ``anyio.open_signal_receiver``),
and a pre-bound listening socket must say it is TCP: asyncio sets ``TCP_NODELAY`` on accepted
connections only when the listening socket's proto is ``IPPROTO_TCP``; without it every small answer
on a kept-alive connection waits ~40 ms for a delayed ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import math
import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import anyio
import uvicorn

from channels.errors import ChannelCrashed, ChannelStartError

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


def unix_listening_socket(path: str, *, mode: int = 0o660, backlog: int = 2048) -> socket.socket:
    """A non-blocking unix socket listening at ``path``, created with ``mode`` (the access control:
    whoever may open the file may call). A stale socket file (its connect is refused: the server
    that made it is gone) is replaced; a live one is refused with OSError(EADDRINUSE), as is a path
    that is not a socket."""
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # stale: nobody listens there any more
        else:
            raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o777 & ~mode)  # created with the mode already: no window with a wider one
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, mode)
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


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address (names are resolved)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


class ServedApp:
    """One ASGI app on uvicorn in the current event loop: binds, serves, reports a crash after start.

    ``start(config)`` binds ``host:port`` (port 0: a free one; :attr:`port` says which; OSError when the
    address cannot be bound, for the caller to word) and returns once uvicorn accepts connections.
    :meth:`serving` returns never while the server runs and raises :class:`ChannelCrashed` when its task
    ends or its listening socket is closed under it, unless :meth:`stop` (or the caller's ``stopping``)
    says the stop is ours. uvicorn runs as one task owned by this object and awaited by ``stop`` (a
    task group entered in ``start`` and left in ``stop`` would break when the caller wraps ``stop`` in
    a cancel scope, as the daemon does to bound it).
    """

    def __init__(
        self, what: str, host: str, port: int, *, start_timeout_s: float = 30.0, unix_path: str = ""
    ) -> None:
        self.what = what
        self.host = host
        self.port = port
        #: serve on this unix socket (mode 0660, removed on stop) instead of host:port
        self.unix_path = unix_path
        self.start_timeout_s = start_timeout_s
        self.server: NoSignalServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self._stopping = False

    async def start(self, config: uvicorn.Config) -> None:
        if self._task is not None:
            return
        if self.unix_path:
            sock = unix_listening_socket(self.unix_path)
        else:
            sock = listening_socket(self.host, self.port)
            self.port = int(sock.getsockname()[1])
        self._sock = sock
        self._stopping = False
        server = self.server = NoSignalServer(config)
        self._task = asyncio.get_running_loop().create_task(self._serve(server, sock), name=self.what)
        try:
            with anyio.fail_after(self.start_timeout_s):
                while not server.started:
                    if self._task.done():  # uvicorn gave up (e.g. a lifespan failure): it logged why
                        raise ChannelStartError(f"{self.what}: the server stopped while starting")
                    await anyio.sleep(0.01)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.stop()
            raise

    @staticmethod
    async def _serve(server: NoSignalServer, sock: socket.socket) -> None:
        try:
            await server.serve([sock])
        finally:
            sock.close()

    async def serving(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Raises ChannelCrashed when the server dies while nobody is stopping it."""
        if self._task is None or self._sock is None:
            raise ChannelCrashed(f"{self.what}: the server is not running")
        await watch_server(
            self._task,
            self._sock,
            f"{self.what} on {self.address}",
            stopping=lambda: self._stopping or stopping(),
        )

    @property
    def address(self) -> str:
        return f"unix:{self.unix_path}" if self.unix_path else f"{self.host}:{self.port}"

    async def stop(self, *, wait_s: float | None = None) -> BaseException | None:
        """Ask uvicorn to stop and wait for it (uvicorn bounds the wait by its graceful-shutdown
        timeout; ``wait_s`` bounds it here too, then the task is cancelled). Answers the error the
        server task ended with, if any (a crash the watch has reported already)."""
        self._stopping = True
        if self.server is not None:
            self.server.should_exit = True
        task, self._task = self._task, None
        error: BaseException | None = None
        if task is not None:
            with anyio.move_on_after(wait_s) if wait_s is not None else nullcontext():
                try:
                    await asyncio.shield(task)
                except Exception as exc:
                    error = exc
            if not task.done():
                task.cancel()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            if self.unix_path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.unix_path)
        return error
