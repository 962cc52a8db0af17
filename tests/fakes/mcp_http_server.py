"""The fake MCP server of ``mcp_stdio_server.py`` over streamable HTTP, on a real uvicorn at 127.0.0.1.

``async with serve_mcp_http() as url:`` yields the endpoint (``http://127.0.0.1:PORT/mcp``);
``python -m tests.fakes.mcp_http_server --port P`` runs it standalone.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
from collections.abc import AsyncIterator

import anyio
import uvicorn

from channels.serving import NoSignalServer
from tests.fakes.mcp_stdio_server import build_server
from tests.waiting import until


@contextlib.asynccontextmanager
async def serve_mcp_http(port: int = 0) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    # lifespan "on": the app's lifespan runs the SDK's session manager
    config = uvicorn.Config(
        build_server().streamable_http_app(),
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = NoSignalServer(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            await until(lambda: server.started, timeout=10, interval=0.005, what="uvicorn to start")
            try:
                yield f"http://127.0.0.1:{port}/mcp"
            finally:
                server.should_exit = True
    finally:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8931)
    port = parser.parse_args().port

    async def run() -> None:
        async with serve_mcp_http(port) as url:
            print(url, flush=True)
            await anyio.sleep_forever()

    anyio.run(run)


if __name__ == "__main__":
    main()
