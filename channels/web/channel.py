"""The web channel: the Starlette app on uvicorn, inside our own event loop and task group.

uvicorn must not own the process's signals (the daemon does, through ``anyio.open_signal_receiver``),
so the server runs with signal capture disabled and is stopped by setting ``should_exit``. The listening
socket is bound here first so that "port in use" and "non-loopback without tokens" fail ``start`` with
one clear :class:`~channels.base.ChannelStartError` line.

Stopping: the app's shutdown event makes new turns answer 503 and gives open streams
``[web] shutdown_deadline_s`` to finish (then their turns are cancelled, stored as interrupted, and the
streams end with a final ``error`` event); uvicorn stops accepting at once and waits a little longer
than that deadline for connections to drain.

Dying: when uvicorn's task ends or the kernel closes the listening socket while the daemon runs,
:meth:`WebChannel.serving` raises :class:`~channels.base.ChannelCrashed` and the daemon stops with exit
status 1, for its supervisor to restart it (a daemon without its web server is worse than a restart).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import math
import socket
from typing import TYPE_CHECKING, ClassVar

import anyio
import structlog
import uvicorn

from channels.base import Channel, ChannelCrashed, ChannelStartError
from channels.serving import NoSignalServer, listening_socket, watch_server
from channels.web.app import MAX_HEAD_READ_BYTES, create_app
from channels.web.state import WebState

if TYPE_CHECKING:
    from agent.core import Agent
    from config import Settings

log = structlog.get_logger("hero.web")

#: uvicorn's own grace on top of our stream deadline, so streams end themselves first
DRAIN_MARGIN_S = 3.0
START_TIMEOUT_S = 30.0


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address."""
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


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or ChannelStartError with one clear line."""
    try:
        return listening_socket(host, port)
    except socket.gaierror:
        raise ChannelStartError(f"web: cannot resolve listen host {host!r}") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ChannelStartError(
                f"web: cannot listen on {host}:{port}: the address is already in use"
            ) from None
        if exc.errno == errno.EACCES:
            raise ChannelStartError(f"web: cannot listen on {host}:{port}: permission denied") from None
        raise ChannelStartError(f"web: cannot listen on {host}:{port}: {exc.strerror}") from None


class WebChannel(Channel):
    """REST + SSE + the OpenAI-compatible API + the web page, on one uvicorn server.

    After ``start``, ``port`` is the bound port (useful with ``port = 0``).
    """

    name: ClassVar[str] = "web"

    def __init__(self, settings: Settings, agent: Agent) -> None:
        super().__init__(settings, agent)
        self.state: WebState | None = None
        self.server: NoSignalServer | None = None
        self.port: int = settings.web.port
        self._runner: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        return settings.web.enabled

    async def start(self) -> None:
        web = self.settings.web
        # (config validation refuses this too; checked again here because a channel can be built
        # from any Settings, and the rule is a security boundary)
        if not web.tokens and not is_loopback(web.host):
            raise ChannelStartError(
                f"web: refusing to listen on {web.host} without authentication: "
                "configure [web] tokens or use a loopback host such as 127.0.0.1"
            )
        if self._runner is not None:
            return
        sock = bind_socket(web.host, web.port)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        self.state = WebState(self.settings, self.agent)
        app = create_app(self.settings, self.agent, state=self.state)
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=math.ceil(web.shutdown_deadline_s + DRAIN_MARGIN_S),
            timeout_keep_alive=5,
            # oversized request heads get their 431 from the app instead of a reset (HeaderLimit);
            # h11 named explicitly, as the limit below is an h11 setting
            http="h11",
            h11_max_incomplete_event_size=MAX_HEAD_READ_BYTES,
        )
        # uvicorn logs through stdlib logging; keep its chatter at warning level
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        self.server = NoSignalServer(config)
        # uvicorn is asyncio-only; its server runs as one task owned by this channel and awaited by
        # ``stop`` (a task group entered here and left in ``stop`` would break if the caller wraps
        # ``stop`` in a cancel scope, as the daemon does to bound it)
        self._runner = asyncio.get_running_loop().create_task(self._serve(sock), name="web-channel")
        try:
            with anyio.fail_after(START_TIMEOUT_S):
                while not self.server.started:
                    if self._runner.done():
                        raise ChannelStartError("web: the server stopped while starting")
                    await anyio.sleep(0.01)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.stop()
            raise
        log.info("web.started", host=web.host, port=self.port, auth="tokens" if web.tokens else "local-user")

    async def _serve(self, sock: socket.socket) -> None:
        assert self.server is not None
        try:
            await self.server.serve([sock])
        finally:
            sock.close()

    async def serving(self) -> None:
        """Raises ChannelCrashed when uvicorn's task ends or the listening socket is gone while the
        daemon still wants the channel (see :func:`~channels.serving.watch_server`)."""
        if self._runner is None or self._sock is None:
            raise ChannelCrashed("web: the server is not running")
        state = self.state
        await watch_server(
            self._runner,
            self._sock,
            f"web: the server on {self.settings.web.host}:{self.port}",
            stopping=lambda: state is None or state.shutdown.is_set(),
        )

    async def stop(self) -> None:
        """Refuse new turns, give running ones the shutdown deadline, then close the server."""
        if self.state is not None:
            self.state.shutdown.set()
        if self.server is not None:
            self.server.should_exit = True
        runner, self._runner = self._runner, None
        if runner is not None:
            # uvicorn itself bounds this: timeout_graceful_shutdown, then it cancels connections
            try:
                await asyncio.shield(runner)
            except Exception as exc:  # it crashed before: the daemon's watch reported it already
                log.error("web.server_failed", error_type=type(exc).__name__, error=str(exc))
            log.info("web.stopped", port=self.port)
        self._sock = None
