"""The CLI channel against the real agent, the real embedded store (tmp dir) and FakeOpenAI."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput
from prompt_toolkit.output.plain_text import PlainTextOutput

from agent.core import Agent
from agent.factory import open_agent
from channels.terminal.session import CliChat
from config import Settings
from config.loader import load_settings
from config.logging import reset_logging
from store import open_store
from tests.fakes.openai_server import FakeOpenAI
from tests.waiting import until


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``main`` and ``configure_logging`` configure process-wide logging: undo it after each test."""
    yield
    reset_logging()


def make_settings(home: Path, base_url: str, **env: str) -> Settings:
    """Settings as a user would get them: through the loader, from the environment."""
    return load_settings(
        None,
        {
            "HOME": str(home),
            "HERO_AGENT_DATA_DIR": str(home / "data"),
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": "sk-test-key-0000000000000000",
            "HERO_AGENT_LLM__MODEL": "fake-model",
            # auto-memory requests would take scripted replies meant for the turn
            "HERO_AGENT_MEMORY__ENABLED": "false",
            "HERO_AGENT_LLM__MAX_RETRIES": "0",
            **env,
        },
    )


@dataclass
class Runtime:
    fake: FakeOpenAI
    settings: Settings
    agent: Agent


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with FakeOpenAI() as fake:
        settings = make_settings(tmp_path, fake.base_url)
        async with open_store(settings) as store, open_agent(settings, store) as agent:
            yield Runtime(fake, settings, agent)


class Terminal:
    """Pipe input for the prompt, a plain-text sink for the replies."""

    def __init__(self, pipe: PipeInput) -> None:
        self.pipe = pipe
        self.buffer = io.StringIO()
        self.reply_output = PlainTextOutput(self.buffer)

    @property
    def text(self) -> str:
        return self.buffer.getvalue().replace("\r\n", "\n")

    def chat(
        self, runtime: Runtime, *, user: str = "alice", context: str = "default", **kw: object
    ) -> CliChat:
        return CliChat(
            runtime.settings,
            runtime.agent,
            user=user,
            context=context,
            input=self.pipe,
            output=DummyOutput(),
            reply_output=self.reply_output,
            **kw,  # type: ignore[arg-type]
        )

    async def wait_for(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        return await until(
            lambda: re.search(pattern, self.text),
            timeout=timeout,
            what=lambda: f"{pattern!r} in {self.text!r}",
        )


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    with create_pipe_input() as pipe:
        yield Terminal(pipe)
