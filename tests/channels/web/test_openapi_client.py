"""A client generated from ``/openapi.json`` by openapi-python-client works: every array has ``items``
(a generator drops models and operations otherwise), and the generated chat completions operation and
message list call the live server."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from store import Scope
from tests.channels.web.conftest import Web

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

GENERATOR = Path(sys.executable).parent / "openapi-python-client"


def _arrays_without_items(node: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        kind = node.get("type")
        if (kind == "array" or (isinstance(kind, list) and "array" in kind)) and "items" not in node:
            found.append(path or "/")
        for key, value in node.items():
            found += _arrays_without_items(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _arrays_without_items(value, f"{path}[{i}]")
    return found


async def test_a_generated_client_calls_the_chat_route_and_lists_messages(web: Web, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=web.base_url) as http:
        doc = (await http.get("/openapi.json")).json()
    assert _arrays_without_items(doc) == []
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(doc))
    out = tmp_path / "hero_generated"
    done = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(spec), "--output-path", str(out), "--meta", "none"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "models" / "message.py").exists()
    sys.path.insert(0, str(tmp_path))
    try:
        client_mod = importlib.import_module("hero_generated.client")
        completions = importlib.import_module("hero_generated.api.default.chat_completions")
        messages = importlib.import_module("hero_generated.api.default.list_messages")
        body_mod = importlib.import_module("hero_generated.models.chat_completions_body")
        async with client_mod.AuthenticatedClient(base_url=web.base_url, token="tok-alice") as client:
            body = body_mod.ChatCompletionsBody.from_dict(
                {"model": "hero-agent", "messages": [{"role": "user", "content": "generated hello"}]}
            )
            answer = await completions.asyncio(client=client, body=body)
            assert answer.choices[0].message.content == "echo: generated hello"
            assert answer.id.startswith("chatcmpl-")
            (conv,) = (await web.store.conversations.list(Scope("default", "alice"))).items
            listed = await messages.asyncio(conv.sid, client=client)
            assert [(m.role.value, m.content) for m in listed.items] == [
                ("user", "generated hello"),
                ("assistant", "echo: generated hello"),
            ]
            assert listed.items[1].turn_id == answer.id.removeprefix("chatcmpl-")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.startswith("hero_generated")]:
            del sys.modules[name]
