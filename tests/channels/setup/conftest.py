"""The set-up commands against the fake servers (OpenAI, Bot API) running in threads of the test."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from config.logging import reset_logging
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.telegram_server import TOKEN as BOT_TOKEN
from tests.fakes.telegram_server import FakeBotAPI

OPENAI_KEY = "sk-setup-test-key-0000000000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    home: Path
    openai: FakeOpenAI
    bot: FakeBotAPI
    env: dict[str, str]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """Fakes that demand the right key and token, and a clean environment pointing nowhere else."""
    for name in list(os.environ):
        if name.startswith(("HERO_AGENT_", "OPENAI_", "ANTHROPIC_", "OSIS_", "TELEGRAM_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    with FakeOpenAI().running_in_thread() as openai, FakeBotAPI().running_in_thread() as bot:
        openai.api_key = OPENAI_KEY
        env = {
            "HOME": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path / ".config"),
            "HERO_AGENT_DATA_DIR": str(tmp_path / "data"),
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield World(tmp_path, openai, bot, env)
    reset_logging()


__all__ = ["BOT_TOKEN", "OPENAI_KEY", "World", "free_port"]
