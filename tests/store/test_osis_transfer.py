"""Export from the embedded engine, import into the osis engine, export again: identical."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.api.store import Store
from store.osis.client import OsisEngine
from store.sqlite.engine import EmbeddedEngine
from store.transfer import import_jsonl
from tests.store.osis_fixtures import client_settings, embedded_server
from tests.store.test_transfer import export_text, populate

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_embedded_to_osis_and_back_is_identical(tmp_path: Path) -> None:
    async with EmbeddedEngine(tmp_path / "source", fsync_commits=False) as source:
        await populate(Store(source))
        first = await export_text(source, None)
    dump = tmp_path / "dump.jsonl"
    dump.write_text(first, encoding="utf-8")
    async with embedded_server(tmp_path / "served") as served:
        async with OsisEngine(client_settings(served.base_url)) as osis:
            result = await import_jsonl(osis, dump)
            assert result.read == result.written == len(first.splitlines()) - 1
            assert await export_text(osis, None) == first
            assert (await import_jsonl(osis, dump)).written == 0
            assert await export_text(osis, None) == first
        # what the server holds is the same store, byte for byte
        assert await export_text(served.engine, None) == first
