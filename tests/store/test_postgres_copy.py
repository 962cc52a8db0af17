"""``hero-agent store copy --to CONFIG``: embedded -> postgres, then postgres's export is byte-identical
to the embedded store's (every kind, several contexts, identity links in ``_system``)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from store import EmbeddedEngine, Kind, ListQuery, Scope, export_jsonl
from store.postgres.engine import PostgresEngine
from tests.store.postgres_fixtures import new_database, settings_for

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
SCRIPT = Path(sys.executable).parent / "hero-agent"


async def _fill(engine: EmbeddedEngine) -> None:
    for scope in (Scope("default", "ann"), Scope("work", "bob"), Scope("_system", "identity")):
        conv = await engine.create(
            Kind.CONVERSATION, scope, {"title": f"hello {scope.user_id}", "is_archived": False, "tags": ["a"]}
        )
        for n in range(3):
            fields = {"conversation_id": conv["sid"], "role": "user", "content": f"m{n} é", "channel": "cli"}
            await engine.create(Kind.MESSAGE, scope, fields, request_key=f"k{n}")
        await engine.create(Kind.MEMORY, scope, {"content": "likes tea", "hash": "h1", "score": 0.25})
        await engine.create(Kind.STATE, scope, {"key": "link.telegram.1", "value": '{"user": "ann"}'})
        await engine.create(Kind.USAGE, scope, {"conversation_id": conv["sid"], "cost": 1e-05, "tokens": 7})
        await engine.create(Kind.AUDIT, scope, {"conversation_id": conv["sid"], "tool": "clock"})
        await engine.create(
            Kind.ATTACHMENT, scope, {"conversation_id": conv["sid"], "kind": "image", "data": "aGk="}
        )


async def _export(engine: object) -> str:
    out = io.StringIO()
    await export_jsonl(engine, out, context=None)  # type: ignore[arg-type]
    return out.getvalue()


async def test_copy_embedded_to_postgres_exports_identically(tmp_path: Path) -> None:
    async with EmbeddedEngine(tmp_path / "data") as source:
        await _fill(source)
        expected = await _export(source)
    url = await new_database()
    target = tmp_path / "target.toml"
    target.write_text(f'[store]\nengine = "postgres"\nurl = "{url}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERO_AGENT_", "OSIS_"))}
    env.update(HOME=str(tmp_path), HERO_AGENT_DATA_DIR=str(tmp_path / "data"), OPENAI_API_KEY="sk-test-0000")
    done = subprocess.run(
        [str(SCRIPT), "--log-level", "warning", "store", "copy", "--to", str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    records = expected.count("\n") - 1
    assert done.stdout == f"copied {records} records from the embedded store to the postgres store\n"
    async with PostgresEngine(settings_for(url)) as copied:
        assert await _export(copied) == expected
        # the copy is a working store: numbering and sids go on after the copied ones
        scope = Scope("default", "ann")
        conv = (await copied.list(Kind.CONVERSATION, scope, ListQuery())).items[0]
        fields = {"conversation_id": conv["sid"], "role": "user", "content": "next", "channel": "cli"}
        msg = await copied.create(Kind.MESSAGE, scope, fields)
        assert msg["seq"] == 4 and msg["sid"] not in expected
