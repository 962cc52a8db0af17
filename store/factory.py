"""Build the configured engine and open a :class:`~store.api.Store` on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from config.settings import Settings, StoreSettings
from store.api.store import Store
from store.engine import Engine
from store.errors import StoreUnavailable
from store.sqlite.engine import EmbeddedEngine


def build_engine(settings: StoreSettings, *, daemon: bool = False) -> Engine:
    """The engine named by ``settings.engine`` (not opened yet). ``daemon``: for ``serve``, whose
    embedded store gets a writer process under ``writer = "auto"`` (a burst of turns then does not
    wait on the daemon's interpreter lock for its writes); every other command gets the thread (a
    one-shot command would pay the writer process's start, ~0.2 s, for a few writes)."""
    if settings.engine == "embedded":
        writer = settings.writer
        if writer == "auto":
            writer = "process" if daemon else "thread"
        return EmbeddedEngine(
            settings.path,
            busy_timeout_s=settings.busy_timeout_s,
            fsync_commits=settings.fsync_commits,
            writer=writer,
        )
    if settings.engine == "osis":
        # imported here so that the embedded path never loads the RPC client and its dependencies
        from store.osis.client import OsisEngine  # noqa: PLC0415

        return OsisEngine(settings)
    if settings.engine == "postgres":
        from store.postgres.engine import PostgresEngine  # noqa: PLC0415

        return PostgresEngine(settings)
    raise StoreUnavailable(f"unknown store engine {settings.engine!r}: use 'embedded', 'osis' or 'postgres'")


@asynccontextmanager
async def open_store(settings: Settings, *, daemon: bool = False) -> AsyncIterator[Store]:
    """The store described by ``settings``, open for the duration of the ``async with`` (``daemon``:
    see :func:`build_engine`).

    The embedded engine creates its data dir (``settings.store.path``) when missing.
    """
    store = Store(
        build_engine(settings.store, daemon=daemon),
        max_message_chars=settings.agent.max_message_chars,
        max_attachment_bytes=settings.agent.max_attachment_bytes,
    )
    async with store:
        yield store
