"""Real OSIS servers for tests: the Starlette app on a real uvicorn on 127.0.0.1 serving an embedded
engine in a tmp dir, in the test's own event loop; or the real ``hero-agent osis serve`` process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import uvicorn

from channels.serving import ServedApp
from config import StoreSettings
from store.engine import Engine
from store.osis.client import OsisEngine
from store.osis.server import build_osis_app
from store.sqlite.engine import EmbeddedEngine
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[2]
HERO_AGENT = str(Path(sys.executable).with_name("hero-agent"))


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
    """Serve an (already open) engine on 127.0.0.1:``port`` (0: a free one) until the block ends, the
    way ``hero-agent osis serve`` does (:class:`~channels.serving.ServedApp`)."""
    app = (
        build_osis_app(engine, secret=secret)
        if max_body is None
        else build_osis_app(engine, secret=secret, max_body=max_body)
    )
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    served = ServedApp("osis test server", "127.0.0.1", port)
    await served.start(config)
    try:
        assert served.server is not None
        yield ServedEngine(engine, served.port, served.server)
    finally:
        with anyio.CancelScope(shield=True):
            await served.stop()


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


def subprocess_env() -> dict[str, str]:
    """The environment for child processes: no hero-agent or OSIS settings leak in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERO_AGENT_", "OSIS_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _config(tmp_path: Path, secret: str = "") -> Path:
    cfg = tmp_path / "hero-agent.toml"
    lines = ["[store]", f'path = "{tmp_path / "data"}"']
    if secret:
        lines.append(f'secret = "{secret}"')
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


@contextmanager
def serve_process(
    tmp_path: Path, port: int, *extra: str, secret: str = ""
) -> Iterator[subprocess.Popen[str]]:
    """``hero-agent osis serve`` on ``port``; its data dir and its log (``osis-serve.log``) in tmp_path."""
    cfg = _config(tmp_path, secret)
    cmd = [HERO_AGENT, "--config", str(cfg), "osis", "serve", "--port", str(port), *extra]
    # output to a file, not a pipe: a pipe nobody reads would block a chatty server
    with (tmp_path / "osis-serve.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=subprocess_env(), stdout=log, stderr=log, text=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


async def wait_ready(proc: subprocess.Popen[str], port: int, secret: str = "") -> dict[str, object]:
    url = f"http://127.0.0.1:{port}/hero_osis_ai/rpc"
    body = {"jsonrpc": "2.0", "id": 1, "method": "rpc.discover"}
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    async with httpx.AsyncClient(timeout=2, headers=headers) as http:

        async def discovered() -> dict[str, object] | None:
            assert proc.poll() is None, "osis serve exited during start-up"
            try:
                answer = (await http.post(url, json=body)).json()
            except httpx.TransportError:
                return None
            return dict(answer["result"])

        return await until(discovered, timeout=30, interval=0.05, what="osis serve to answer")


async def wait_exit(proc: subprocess.Popen[str]) -> int:
    with anyio.fail_after(60):
        return await anyio.to_thread.run_sync(proc.wait)


def ask_process(cfg: Path, text: str, *extra: str) -> subprocess.Popen[str]:
    """``hero-agent ask`` as alice in the default context, with the config ``cfg``."""
    cmd = [HERO_AGENT, "--config", str(cfg), "ask", "--context", "default", "--user", "alice", *extra, text]
    return subprocess.Popen(
        cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


async def answer_of(proc: subprocess.Popen[str]) -> str:
    """The standard output of a finished ``ask`` process, which must have exited 0."""
    code = await wait_exit(proc)
    out, err = proc.communicate(timeout=10)
    assert code == 0, err
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
