"""Several ``hero-agent`` processes on one ``hero-agent osis serve``: one store for all of them.

The real CLI (``hero-agent ask``) with ``store.engine = "osis"``, a fake OpenAI server at the network
seam, and the real OSIS server process in front of an embedded store.
"""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest

from store.api.store import Store
from store.models import Scope
from store.osis.client import OsisEngine
from tests.fakes.openai_server import FakeOpenAI
from tests.store.osis_fixtures import (
    answer_of,
    ask_process,
    client_settings,
    free_port,
    serve_process,
    wait_exit,
    wait_ready,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
ALICE = Scope("default", "alice")


def _agent_config(tmp_path: Path, osis_url: str, llm_url: str) -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        "\n".join(
            [
                "[store]",
                'engine = "osis"',
                f'url = "{osis_url}"',
                "[llm]",
                f'base_url = "{llm_url}"',
                'api_key = "sk-test"',
                'model = "fake-model"',
                "[memory]",
                "enabled = false",
            ]
        )
        + "\n"
    )
    return cfg


async def test_cli_processes_share_one_osis_store(tmp_path: Path) -> None:
    port = free_port()
    osis_url = f"http://127.0.0.1:{port}/hero_osis"
    with serve_process(tmp_path, port) as server, FakeOpenAI().running_in_thread() as fake:
        await wait_ready(server, port)
        cfg = _agent_config(tmp_path, osis_url, fake.base_url)
        # one process starts the conversation, the next one continues it: it sees the first turn
        assert "echo: first question" in await answer_of(ask_process(cfg, "first question"))
        assert "echo: second question" in await answer_of(ask_process(cfg, "second question"))
        sent = [m["content"] for m in fake.requests[-1]["messages"] if m["role"] in ("user", "assistant")]
        assert sent[:3] == ["first question", "echo: first question", "second question"]
        async with Store(OsisEngine(client_settings(osis_url))) as store:
            convs = (await store.conversations.list(ALICE)).items
            assert len(convs) == 1
            conv = convs[0]
        # two processes on the same conversation at once: their turns are serialized, never interleaved
        with anyio.fail_after(120):
            procs = [ask_process(cfg, f"parallel {n}", "--conversation", conv.sid) for n in range(2)]
            for proc in procs:
                await answer_of(proc)
        async with Store(OsisEngine(client_settings(osis_url))) as store:
            messages = (await store.messages.list(ALICE, conv.sid, limit=100)).items
        server.send_signal(signal.SIGTERM)
        assert await wait_exit(server) == 0
    assert [m.seq for m in messages] == list(range(1, 9))
    assert [m.role for m in messages] == ["user", "assistant"] * 4
    for q, a in zip(messages[::2], messages[1::2], strict=True):
        assert a.content == f"echo: {q.content}"
    assert {m.content for m in messages[4::2]} == {"parallel 0", "parallel 1"}
    assert all(m.channel == "cli" for m in messages)
