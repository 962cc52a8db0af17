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

import errno
import logging
import math
import socket
from typing import TYPE_CHECKING, ClassVar

import structlog
import uvicorn

from channels.base import Channel
from channels.errors import ChannelStartError
from channels.serving import NoSignalServer, ServedApp, is_loopback
from channels.web.app import MAX_HEAD_READ_BYTES, create_app
from channels.web.state import WebState
from store import StoreError

if TYPE_CHECKING:
    from agent.core import Agent
    from config import Settings

log = structlog.get_logger("hero.web")

#: uvicorn's own grace on top of our stream deadline, so streams end themselves first
DRAIN_MARGIN_S = 3.0
START_TIMEOUT_S = 30.0
#: the page's user without tokens before it became the OS user by default
LEGACY_LOCAL_USER = "local"


def listen_error(host: str, port: int, exc: OSError) -> ChannelStartError:
    """The one clear line for a listening socket that could not be made."""
    if isinstance(exc, socket.gaierror):
        return ChannelStartError(f"web: cannot resolve listen host {host!r}")
    if exc.errno == errno.EADDRINUSE:
        return ChannelStartError(f"web: cannot listen on {host}:{port}: the address is already in use")
    if exc.errno == errno.EACCES:
        return ChannelStartError(f"web: cannot listen on {host}:{port}: permission denied")
    return ChannelStartError(f"web: cannot listen on {host}:{port}: {exc.strerror}")


class WebChannel(Channel):
    """REST + SSE + the OpenAI-compatible API + the web page, on one uvicorn server.

    After ``start``, ``port`` is the bound port (useful with ``port = 0``).
    """

    name: ClassVar[str] = "web"

    def __init__(self, settings: Settings, agent: Agent) -> None:
        super().__init__(settings, agent)
        self.state: WebState | None = None
        self.served = ServedApp("web: the server", settings.web.host, settings.web.port)

    @property
    def port(self) -> int:
        """The bound port after ``start`` (useful with ``port = 0``)."""
        return self.served.port

    @property
    def server(self) -> NoSignalServer | None:
        return self.served.server

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
        if self.server is not None:
            return
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
        try:
            await self.served.start(config)
        except OSError as exc:
            raise listen_error(web.host, web.port, exc) from None
        log.info("web.started", host=web.host, port=self.port, auth="tokens" if web.tokens else "local-user")
        await self._warn_of_old_local_data()

    async def _warn_of_old_local_data(self) -> None:
        """Before the page's user became the OS user by default it was ``local``: say how to move
        that data when some is there (it stays stored, but the page no longer shows it)."""
        web, user = self.settings.web, self.settings.web_local_user
        if web.tokens or web.local_user or user == LEGACY_LOCAL_USER:
            return
        try:
            contexts = await self.agent.store.users_with_data(LEGACY_LOCAL_USER)
        except StoreError as exc:
            log.debug("web.local_data_check_failed", error_type=type(exc).__name__)
            return
        if contexts:
            log.warning(
                "web.local_user_data",
                message=f"the web page's user is now {user!r}: data of the former local user "
                f"{LEGACY_LOCAL_USER!r} is not shown (contexts: {', '.join(contexts)})",
                fix=f"hero-agent store rename-user {LEGACY_LOCAL_USER} {user}",
                keep_old_user=f'or set [web] local_user = "{LEGACY_LOCAL_USER}"',
            )

    async def serving(self) -> None:
        """Raises ChannelCrashed when uvicorn's task ends or the listening socket is gone while the
        daemon still wants the channel (see :class:`~channels.serving.ServedApp`)."""
        state = self.state
        await self.served.serving(stopping=lambda: state is None or state.shutdown.is_set())

    async def stop(self) -> None:
        """Refuse new turns, give running ones the shutdown deadline, then close the server."""
        if self.state is not None:
            self.state.shutdown.set()
        started = self.server is not None
        # uvicorn itself bounds this: timeout_graceful_shutdown, then it cancels connections
        error = await self.served.stop()
        if error is not None:  # it crashed before: the daemon's watch reported it already
            log.error("web.server_failed", error_type=type(error).__name__, error=str(error))
        if started:
            log.info("web.stopped", port=self.port)
