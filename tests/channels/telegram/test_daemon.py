"""``hero-agent serve`` with only the Telegram channel, as a real subprocess (e2e)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import anyio
import pytest

from tests.channels.telegram.conftest import ALICE
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.telegram_server import TOKEN, FakeBotAPI

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def test_serve_runs_the_bot_until_sigterm(tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI) -> None:
    config = tmp_path / "hero-agent.toml"
    config.write_text(
        f"""
[llm]
base_url = "{llm.base_url}"
api_key = "sk-test-key"
model = "fake-model"

[memory]
enabled = false

[store]
path = "{tmp_path / "data"}"

[web]
enabled = false

[telegram]
enabled = true
api_base_url = "{tg.base_url}"
allowed_users = [{ALICE}]
poll_timeout_s = 1
"""
    )
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": TOKEN, "HERO_AGENT_LOGGING__FORMAT": "json"}
    cmd = [sys.executable, "-m", "channels.main", "serve", "--config", str(config)]
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log_file:
        code = await _serve_until_answered(cmd, env, log_file, tg)
    assert code == 0
    logs = log_path.read_text()
    assert "telegram.started" in logs and "daemon.stopped" in logs
    assert TOKEN not in logs


async def _serve_until_answered(
    cmd: list[str], env: dict[str, str], log_file: IO[bytes], tg: FakeBotAPI
) -> int:
    proc = await anyio.open_process(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        await tg.wait_for(lambda: tg.counts["getUpdates"] >= 1, timeout=30)
        tg.push_update(tg.text_update(ALICE, ALICE, "hello daemon"))
        await tg.wait_for(lambda: tg.messages_in(ALICE) == ["echo: hello daemon"], timeout=20)
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            return await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.aclose()
