"""Build the configured engine and open a :class:`~store.api.Store` on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from config.settings import Settings, StoreSettings
from store.api.store import Store
from store.engine import Engine
from store.errors import StoreUnavailable
from store.sqlite.engine import EmbeddedEngine


def build_engine(settings: StoreSettings) -> Engine:
    """The engine named by ``settings.engine`` (not opened yet)."""
    if settings.engine == "embedded":
        return EmbeddedEngine(
            settings.path,
            busy_timeout_s=settings.busy_timeout_s,
            fsync_commits=settings.fsync_commits,
            writer=settings.writer,
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
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """The store described by ``settings``, open for the duration of the ``async with``.

    The embedded engine creates its data dir (``settings.store.path``) when missing.
    """
    store = Store(
        build_engine(settings.store),
        max_message_chars=settings.agent.max_message_chars,
        max_attachment_bytes=settings.agent.max_attachment_bytes,
    )
    async with store:
        yield store
