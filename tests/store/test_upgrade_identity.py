"""A data dir made by the code before identity links and per-conversation models (main at f3ae3be)
opens with this code and gains both in place: links and models need no schema change (the embedded
schema's own upgrades are tested in test_embedded.py), old conversations answer ``model == ""``, and
links go in beside the old data."""

from __future__ import annotations

import gzip
import sqlite3
from pathlib import Path

import pytest

from store import DB_FILE
from store.api.links import IdentityLink
from store.api.store import Store
from store.models import Scope
from store.sqlite.engine import EmbeddedEngine

pytestmark = pytest.mark.anyio

#: A data dir written by main at f3ae3be (schema version 1) with the code in ``WRITER``, kept as one
#: gzipped database file so the test needs no git history (CI may check out shallowly). Remade with
#: ``git archive f3ae3be store config | tar x -C OLD`` and ``PYTHONPATH=OLD python -c "$WRITER" DIR``.
OLD_DB = Path(__file__).parent / "data" / "identity_v1.db.gz"
WRITER = """
import anyio, sys
from store.embedded import EmbeddedEngine
from store.api import Store
from store.models import Scope

async def main() -> None:
    async with EmbeddedEngine(sys.argv[1]) as engine:
        store = Store(engine)
        scope = Scope("default", "local")
        conv = await store.conversations.create(scope, "from the old page", channel="web")
        await store.messages.append(scope, conv.sid, "user", "old words", channel="web")
        await store.memories.add(scope, "an old memory")
        await store.state.set(scope, "active_conversation", conv.sid)

anyio.run(main)
"""


def old_data_dir(target: Path) -> Path:
    """The data dir the old code wrote, restored into ``target``."""
    target.mkdir(parents=True)
    (target / DB_FILE).write_bytes(gzip.decompress(OLD_DB.read_bytes()))
    return target


async def test_an_old_data_dir_gains_links_and_models(tmp_path: Path) -> None:
    data = old_data_dir(tmp_path / "data")
    with sqlite3.connect(data / DB_FILE) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)  # as the old code left it
    local, ann = Scope("default", "local"), Scope("default", "ann")
    async with EmbeddedEngine(data) as engine:
        store = Store(engine)
        [conv] = (await store.conversations.list(local)).items
        assert conv.title == "from the old page" and conv.model == ""
        assert (await store.conversations.set_model(local, conv.sid, "big")).model == "big"
        assert await store.links.list("telegram") == []
        await store.links.set(IdentityLink("telegram", "42", "local", 1, "cli:test"))
        moved = await store.rename_user("local", "ann")
        assert moved == {
            "default": {"AgentConversation": 1, "AgentMessage": 1, "AgentMemory": 1, "AgentState": 1}
        }
        assert [m.content for m in (await store.messages.list(ann, conv.sid)).items] == ["old words"]
        link = await store.links.get("telegram", "42")
        assert link is not None and link.user == "ann"
    # and the upgraded dir opens again with everything in place
    async with EmbeddedEngine(data) as engine:
        store = Store(engine)
        assert (await store.conversations.get(ann, conv.sid)).model == "big"
        assert [x.user for x in await store.links.list("telegram")] == ["ann"]
