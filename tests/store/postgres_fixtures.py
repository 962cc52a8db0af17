"""A real PostgreSQL for the tests: one throwaway cluster per test session, one database per test.

The cluster lives in a temp dir, listens on a free loopback port (and a unix socket in that dir) and
is started on first use, as the ``postgres`` OS user when the tests run as root (``initdb`` refuses
root), as the current user otherwise; ``stop_cluster`` (a session fixture's finaliser) stops it. Each
test gets its own database, copied from a template that already holds the schema. A test that needs
PostgreSQL never skips: without the server binaries it fails with one line saying how to install them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest

from config.settings import StoreSettings
from store.engine import Engine
from store.postgres.engine import PostgresEngine
from tests.waiting import until_sync

INSTALL_HINT = "PostgreSQL is not installed: run `apt-get install -y postgresql` (or `./dev.sh setup`)"
TEMPLATE = "hero_template"


def bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb``."""
    found = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return found[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """One running server: its data dir, port and the superuser ``hero`` (trust auth on loopback)."""

    root: Path
    port: int
    bin: Path
    as_postgres: bool
    extra: tuple[str, ...] = ()

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, db: str = "postgres", **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://hero@127.0.0.1:{self.port}/{db}" + (f"?{query}" if query else "")

    def run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def options(self) -> str:
        opts = [f"-p {self.port}", f"-k {self.root}", "-c listen_addresses=127.0.0.1", *self.extra]
        return " ".join(opts)

    def start(self) -> None:
        self.run(
            "pg_ctl", "-D", str(self.data), "-o", self.options(), "-l", str(self.root / "log"), "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def kill9(self) -> None:
        """SIGKILL the postmaster and every backend (a crash: what was not committed is lost), and
        wait until they are gone (a new server cannot start while the old backends hold its memory)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
        pids = [pid, *(int(p) for p in children.stdout.split())]
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        until_sync(
            lambda: not any(Path(f"/proc/{p}").exists() for p in pids),
            timeout=30,
            interval=0.02,
            what=f"the killed PostgreSQL processes {pids} to be gone",
        )

    def version(self) -> str:
        return self.run("postgres", "--version").stdout.strip()


def make_cluster(*extra: str, init_args: tuple[str, ...] = ()) -> Cluster:
    """initdb and start a new cluster (the caller stops it)."""
    binaries = bin_dir()
    as_postgres = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="hero-pg-"))
    if as_postgres:
        shutil.chown(root, "postgres")
    cluster = Cluster(root, free_port(), binaries, as_postgres, tuple(extra))
    try:
        cluster.run(
            "initdb",
            "-D",
            str(cluster.data),
            "-U",
            "hero",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            *init_args,
        )
        cluster.start()
    except FileNotFoundError:
        pytest.fail(INSTALL_HINT, pytrace=False)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"cannot start PostgreSQL: {exc.stderr.strip() or exc.stdout.strip()}", pytrace=False)
    return cluster


def remove_cluster(cluster: Cluster) -> None:
    cluster.stop("immediate")
    shutil.rmtree(cluster.root, ignore_errors=True)


@dataclass
class _Session:
    cluster: Cluster | None = None
    template_ready: bool = False


_session = _Session()
_numbers = itertools.count(1)


def shared_cluster() -> Cluster:
    """The session's cluster (started on first use), with the template database migrated."""
    if _session.cluster is None:
        # fsync off: a crash of the test machine is not a case the tests make (a kill -9 of the server
        # is, and it loses nothing the OS page cache holds)
        cluster = make_cluster("-c fsync=off", "-c full_page_writes=off", "-c max_connections=300")
        _session.cluster = cluster
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
    return _session.cluster


def stop_cluster() -> None:
    """Stop the session's cluster; the next use starts a new one, whose template is migrated anew."""
    if _session.cluster is not None:
        remove_cluster(_session.cluster)
        _session.cluster = None
        _session.template_ready = False


async def new_database() -> str:
    """A fresh database with the schema (copied from the template, which is migrated once)."""
    cluster = shared_cluster()
    if not _session.template_ready:
        async with PostgresEngine(settings_for(cluster.url(TEMPLATE))):
            pass
        _session.template_ready = True
    name = f"test_{os.getpid()}_{next(_numbers)}"
    async with await psycopg.AsyncConnection.connect(cluster.url(), autocommit=True) as conn:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    return cluster.url(name)


async def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1].split("?", maxsplit=1)[0]
    async with await psycopg.AsyncConnection.connect(shared_cluster().url(), autocommit=True) as conn:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def settings_for(url: str, **changes: object) -> StoreSettings:
    return replace(StoreSettings(engine="postgres", url=url, timeout_s=10.0), **changes)  # type: ignore[arg-type]


@asynccontextmanager
async def postgres_engine(path: Path) -> AsyncIterator[Engine]:
    """The postgres engine on a database of its own in the session's cluster (``path`` is unused)."""
    url = await new_database()
    try:
        async with PostgresEngine(settings_for(url)) as engine:
            yield engine
    finally:
        await drop_database(url)
