"""MCP tool servers (stdio and streamable HTTP) through the official ``mcp`` SDK (2.x).

Each configured server runs in its own task of a task group owned by :func:`open_mcp_servers`: the
task connects, initialises the session, lists the tools, reports them, then keeps the session open
until shutdown. The SDK's transports are anyio task groups that must be entered and exited in one
task, which this shape guarantees.

A server that fails to start (bad command, crash, timeout, unreachable URL) is logged once as
``mcp.server_unavailable`` and skipped: the agent runs without its tools. A server whose connection dies
later (a stdio server's process exits: its stdout ends) is logged once as ``mcp.server_died`` and
restarted with backoff (1 s doubling up to 60 s) until it answers again (``mcp.server_restarted``); its
tools stay registered, and calling them meanwhile answers an error result saying the server is
restarting. Each server's state (:class:`~agent.tools.health.ServerHealth`) is kept in the registry's
``servers``: ``/readyz`` shows a server that is not running as ``degraded``, ``/metrics`` counts deaths
and restarts.

Tools are registered as ``<server>__<tool>`` (sanitised to ``^[a-zA-Z0-9_-]{1,64}$``) so two servers
may offer tools of the same name.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Self, TextIO

import anyio
import structlog
from anyio.abc import TaskStatus
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client  # the SDK's own defaults (timeouts)
from mcp.shared._stream_protocols import ReadStream
from mcp.shared.message import SessionMessage
from mcp.types import (
    CONNECTION_CLOSED,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    PaginatedRequestParams,
    TextContent,
)
from mcp.types import Tool as RemoteTool

from agent.tools.base import Tool, ToolCaller, ToolError, ToolResult
from agent.tools.health import ServerHealth
from agent.tools.registry import ToolRegistry
from config.settings import MCPServerSettings

log = structlog.get_logger()

_UNSAFE_RE = re.compile(r"[^a-zA-Z0-9_-]")
#: a dead server is restarted after this long, doubling up to the maximum while it stays dead
RESTART_BACKOFF_S = 1.0
MAX_RESTART_BACKOFF_S = 60.0


def namespaced_name(server: str, tool: str) -> str:
    """``<server>__<tool>`` with unsafe characters replaced; over-long names keep a hash suffix."""
    name = _UNSAFE_RE.sub("_", f"{server}__{tool}")
    if len(name) > 64:
        digest = hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()[:8]
        name = f"{name[:55]}_{digest}"
    return name


class MCPTool(Tool):
    """One tool of one MCP server, called through that server's live session."""

    def __init__(self, link: _ServerLink, remote: RemoteTool, name: str) -> None:
        self.link = link
        self.remote_name = remote.name
        self.name = name
        self.description = (remote.description or remote.title or remote.name).strip()
        self.description += f" (from MCP server '{link.name}')"
        self.parameters = _object_schema(remote.input_schema)

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        session = self.link.session
        # ``lost`` set: the connection is dead though the task holding it has not yet run to drop it
        # (a call right after the one that saw the death would otherwise fail on the dead session)
        if session is None or self.link.lost.is_set():
            # "running" here means its death was seen a moment ago and the restart loop not yet entered
            state = self.link.health.state.replace("running", "restarting")
            raise ToolError(f"MCP server '{self.link.name}' is not running ({state})")
        try:
            result = await session.call_tool(
                self.remote_name, args, read_timeout_seconds=self.link.settings.timeout_s
            )
        except MCPError as exc:  # protocol errors and a connection that is gone ("Connection closed")
            if exc.code == CONNECTION_CLOSED:
                self.link.lost.set()
            raise ToolError(f"MCP server '{self.link.name}' failed: {exc}") from None
        return ToolResult(content=render_result(result), ok=not result.is_error)


class _ServerLink:
    """One server: its live session (``None`` while it is not running), the event that says the
    current connection died, and its health as /readyz and /metrics show it."""

    def __init__(self, settings: MCPServerSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.session: ClientSession | None = None
        self.lost = anyio.Event()
        self.health = ServerHealth(settings.name)


class _WatchedStream:
    """The transport's read stream, passed through; sets ``lost`` when it ends. For a stdio server
    that is the moment its process exits (its stdout closes); the SDK's session notices nothing until
    the next request fails."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception], lost: anyio.Event) -> None:
        self._inner = inner
        self._lost = lost

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._lost.set()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _WatchedStream:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def render_result(result: CallToolResult) -> str:
    """The text the model sees: text blocks joined; other blocks described; structured data as JSON."""
    parts = [_render_block(block) for block in result.content]
    text = "\n".join(p for p in parts if p)
    if not text and result.structured_content is not None:
        text = json.dumps(result.structured_content, ensure_ascii=False)
    return text or ("(error with no details)" if result.is_error else "(no output)")


def _render_block(block: ContentBlock) -> str:
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, EmbeddedResource):
        res = block.resource
        text = getattr(res, "text", None)
        return text if isinstance(text, str) else f"[resource {res.uri} ({res.mime_type or 'binary'})]"
    if block.type == "resource_link":
        return f"[resource link {getattr(block, 'uri', '')}]"
    return f"[{block.type} content ({getattr(block, 'mime_type', '') or 'binary'}) omitted]"


def _object_schema(schema: dict[str, Any] | None) -> dict[str, Any]:
    # Providers insist on an object schema with "properties"; some servers send neither.
    out = dict(schema or {})
    out.setdefault("type", "object")
    if out.get("type") == "object":
        out.setdefault("properties", {})
    return out


@asynccontextmanager
async def _connect(
    settings: MCPServerSettings, errlog: TextIO, lost: anyio.Event
) -> AsyncIterator[ClientSession]:
    async with AsyncExitStack() as stack:
        if settings.transport == "stdio":
            params = StdioServerParameters(
                command=settings.command, args=list(settings.args), env=dict(settings.env) or None
            )
            read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
        elif settings.transport == "http":
            client = None
            if settings.headers:
                headers = dict(settings.headers)
                client = await stack.enter_async_context(create_mcp_http_client(headers=headers))
            transport = streamable_http_client(settings.url, http_client=client)
            read, write = await stack.enter_async_context(transport)
        else:
            raise ValueError(f"unknown MCP transport {settings.transport!r} (use 'stdio' or 'http')")
        session = await stack.enter_async_context(
            ClientSession(_WatchedStream(read, lost), write, read_timeout_seconds=settings.timeout_s)
        )
        await session.initialize()
        yield session


async def _list_tools(session: ClientSession) -> list[RemoteTool]:
    tools: list[RemoteTool] = []
    cursor: str | None = None
    for _ in range(100):  # a server that pages forever must not hang start-up
        page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


class MCPStartError(Exception):
    """An MCP server did not start; the message is one line naming the cause."""


async def probe_server(settings: MCPServerSettings, errlog: TextIO) -> int:
    """Start one server, list its tools and stop it again (``hero-agent doctor``): the number of tools,
    or MCPStartError within the server's start-up deadline."""
    try:
        with anyio.fail_after(settings.timeout_s):
            async with _connect(settings, errlog, anyio.Event()) as session:
                return len(await _list_tools(session))
    except TimeoutError:
        raise MCPStartError(f"no answer within {settings.timeout_s:g} s") from None
    except Exception as exc:  # a bad command, a crash, an unreachable URL: the same as at start-up
        raise MCPStartError(_describe(exc)) from None


async def _serve(
    link: _ServerLink,
    stop: anyio.Event,
    errlog: TextIO,
    *,
    task_status: TaskStatus[list[RemoteTool]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Connect, report the server's tools, hold the session until ``stop``; restart it with backoff
    whenever its connection dies. A server that never starts is reported with no tools and left
    alone. Never raises."""
    settings, health = link.settings, link.health
    reported = False
    delay = RESTART_BACKOFF_S

    def ready(tools: list[RemoteTool]) -> None:
        nonlocal reported, delay
        if health.state == "restarting":
            health.restarts += 1
            log.info("mcp.server_restarted", server=settings.name, tools=len(tools))
        else:
            log.info("mcp.server_started", server=settings.name, tools=len(tools))
        health.state = "running"
        delay = RESTART_BACKOFF_S
        if not reported:
            reported = True
            task_status.started(tools)

    try:
        while True:
            reason = await _hold_session(link, stop, errlog, ready)
            if stop.is_set():
                return
            if not reported:  # never started: skipped, as its tools are not known
                health.state = "unavailable"
                _unavailable(settings, reason)
                return
            if health.state == "running":  # logged once per outage, not once per failed attempt
                health.deaths += 1
                health.state = "restarting"
                log.error("mcp.server_died", server=settings.name, reason=reason, retry_in_s=delay)
            else:
                log.debug("mcp.restart_failed", server=settings.name, reason=reason, retry_in_s=delay)
            with anyio.move_on_after(delay):
                await stop.wait()
            if stop.is_set():
                return
            delay = min(delay * 2, MAX_RESTART_BACKOFF_S)
    finally:
        link.session = None
        if not reported:
            task_status.started([])


async def _hold_session(
    link: _ServerLink, stop: anyio.Event, errlog: TextIO, ready: Callable[[list[RemoteTool]], None]
) -> str:
    """One connection: connect, list the tools, call ``ready``, hold it until ``stop`` or until it
    dies. Returns why it ended (``"stopped"``, or the failure); never raises."""
    settings = link.settings
    link.lost = anyio.Event()
    started = False
    try:
        # The deadline covers start-up only and is lifted once the tools are listed; a cancel
        # scope (not fail_after) because it must enclose the transport's task groups exactly.
        with anyio.CancelScope(deadline=anyio.current_time() + settings.timeout_s) as scope:
            async with _connect(settings, errlog, link.lost) as session:
                tools = await _list_tools(session)
                scope.deadline = math.inf
                link.session, started = session, True
                ready(tools)
                await _first_of(stop, link.lost)
                link.session = None
        if scope.cancelled_caught and not started:
            return f"no answer within {settings.timeout_s:g} s"
        return "stopped" if stop.is_set() else "the connection closed (the server exited)"
    except Exception as exc:  # any start-up or transport failure
        return _describe(exc)
    finally:
        link.session = None


async def _first_of(*events: anyio.Event) -> None:
    """Wait until any of ``events`` is set."""
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait, event)


def _unavailable(settings: MCPServerSettings, reason: str) -> None:
    where = settings.url if settings.transport == "http" else settings.command
    log.error(
        "mcp.server_unavailable",
        server=settings.name,
        transport=settings.transport,
        target=where,
        reason=reason,
    )


def _describe(exc: BaseException) -> str:
    # Task groups wrap the real cause; show the innermost first error.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300]


@asynccontextmanager
async def open_mcp_servers(
    servers: tuple[MCPServerSettings, ...], registry: ToolRegistry, *, errlog: TextIO | None = None
) -> AsyncIterator[list[str]]:
    """Start every server, register their tools in ``registry``; yields the names of started servers.

    ``errlog`` receives stdio servers' stderr (default: this process's stderr).
    """
    stop = anyio.Event()
    links = [_ServerLink(settings) for settings in servers]
    for link in links:
        registry.servers[link.name] = link.health
    listed: dict[str, list[RemoteTool]] = {}
    async with anyio.create_task_group() as tg:
        try:

            async def start(link: _ServerLink) -> None:
                listed[link.name] = await tg.start(_serve, link, stop, errlog or sys.stderr)

            # Servers start concurrently (a slow one does not delay the others) ...
            async with anyio.create_task_group() as starters:
                for link in links:
                    starters.start_soon(start, link)
            # ... and register in configuration order, so tool order is stable.
            for link in links:
                _register(registry, link, listed.get(link.name, []))
            yield [link.name for link in links if link.session is not None]
        finally:
            stop.set()


def _register(registry: ToolRegistry, link: _ServerLink, tools: list[RemoteTool]) -> None:
    for remote in tools:
        name = namespaced_name(link.name, remote.name)
        if registry.has(name):  # e.g. "a.b" and "a_b" on one server both sanitise to "a_b"
            name = namespaced_name(link.name, f"{remote.name}_{_short_hash(remote.name)}")
        try:
            registry.register(MCPTool(link, remote, name))
        except ValueError as exc:
            log.warning("mcp.tool_skipped", server=link.name, tool=remote.name, reason=str(exc))


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]
