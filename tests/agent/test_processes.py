"""Two ``hero-agent ask`` processes on one embedded data dir and one conversation at once.

The default engine, the real CLI, a fake OpenAI server (slow enough that the two turns overlap): the
turn lease, taken in the same transaction as the user message, must keep the two turns apart.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from store import EmbeddedEngine, Scope, Store
from tests.fakes.openai_server import FakeOpenAI
from tests.store.osis_fixtures import answer_of, ask_process

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
ALICE = Scope("default", "alice")


def _config(tmp_path: Path, llm_url: str) -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[store]\npath = "{tmp_path / "data"}"\n'
        f'[llm]\nbase_url = "{llm_url}"\napi_key = "sk-test"\nmodel = "fake-model"\n'
        "[memory]\nenabled = false\n"
    )
    return cfg


async def test_turns_of_two_processes_on_one_embedded_store_never_interleave(tmp_path: Path) -> None:
    with FakeOpenAI(chunk_delay=0.4).running_in_thread() as fake:
        cfg = _config(tmp_path, fake.base_url)
        assert "echo: first" in await answer_of(ask_process(cfg, "first"))
        async with Store(EmbeddedEngine(tmp_path / "data")) as store:
            [conv] = (await store.conversations.list(ALICE)).items
        with anyio.fail_after(120):
            procs = [ask_process(cfg, f"parallel {n}", "--conversation", conv.sid) for n in range(3)]
            answers = [await answer_of(proc) for proc in procs]
        assert all(f"echo: parallel {n}" in answers[n] for n in range(3))
        requests = [r for r in fake.requests if r.get("messages")]
    async with Store(EmbeddedEngine(tmp_path / "data")) as store:
        messages = (await store.messages.list(ALICE, conv.sid, limit=100)).items
    assert [m.seq for m in messages] == list(range(1, 9))
    assert [m.role for m in messages] == ["user", "assistant"] * 4
    for question, answer in zip(messages[::2], messages[1::2], strict=True):
        assert answer.content == f"echo: {question.content}"
    # each turn's request was built after the previous turn had finished: it carries every earlier
    # question AND its answer, never a question without its answer
    for body in requests[1:]:
        history = [m["content"] for m in body["messages"] if m["role"] in ("user", "assistant")]
        assert history[-1].startswith(("first", "parallel"))
        pairs = history[:-1]
        assert [a for a in pairs[1::2]] == [f"echo: {q}" for q in pairs[::2]]
