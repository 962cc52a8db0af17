"""A ``telegram.api_base_url`` that answers something other than the Bot API (an HTML page, JSON of
another shape) fails start with one line naming the setting, in-process and from ``hero-agent serve``.

The junk comes from a real HTTP server on 127.0.0.1 (a tiny Starlette app on uvicorn), so PTB's real
request path reads it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from channels.errors import ChannelStartError
from channels.telegram import TelegramChannel
from config.settings import Settings
from tests.fakes.served import ServedApp
from tests.fakes.telegram_server import TOKEN

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


class JunkServer(ServedApp):
    """Answers every request with one fixed status, content type and body."""

    def __init__(self, status: int, media_type: str, body: str) -> None:
        self.answer = (status, media_type, body)
        self.requests = 0

    def build_app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            self.requests += 1
            status, media_type, body = self.answer
            return Response(body, status_code=status, media_type=media_type)

        return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"


class _NoAgent:
    """Start fails before the agent is ever used."""


HTML_PAGE = "<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
JUNK = [
    pytest.param(200, "text/html", HTML_PAGE, "the answer is not JSON", id="html-200"),
    pytest.param(404, "text/html", HTML_PAGE, "the answer is not JSON", id="html-404"),
    pytest.param(
        200, "application/json", '{"status": "up"}', 'a JSON object with a boolean "ok"', id="json-no-ok"
    ),
    pytest.param(200, "application/json", "[1, 2]", 'a JSON object with a boolean "ok"', id="json-list"),
    pytest.param(200, "application/json", '{"ok": true}', 'no "result"', id="ok-no-result"),
    pytest.param(
        200, "application/json", '{"ok": true, "result": "x"}', "getMe answered no bot user", id="bad-result"
    ),
]


@pytest.mark.parametrize(("status", "media_type", "body", "reason"), JUNK)
async def test_an_api_answering_junk_fails_start_with_one_line_naming_the_setting(
    settings: Settings, status: int, media_type: str, body: str, reason: str
) -> None:
    async with JunkServer(status, media_type, body) as junk:
        settings = dataclasses.replace(
            settings, telegram=dataclasses.replace(settings.telegram, api_base_url=junk.base_url)
        )
        channel = TelegramChannel(settings, _NoAgent())  # type: ignore[arg-type]
        with pytest.raises(ChannelStartError) as info:
            await channel.start()
        await channel.stop()
    message = str(info.value)
    assert message.startswith(
        f"telegram: telegram.api_base_url ({junk.base_url}) does not answer like the Bot API: "
    )
    assert reason in message and "\n" not in message and TOKEN not in message
    assert junk.requests >= 1


@pytest.mark.e2e
async def test_serve_against_junk_exits_1_with_one_line(tmp_path: Path, settings: Settings) -> None:
    async with JunkServer(200, "text/html", HTML_PAGE) as junk:
        config = tmp_path / "hero-agent.toml"
        config.write_text(
            f"""
[llm]
base_url = "{settings.llm.base_url}"
api_key = "sk-test-key"
model = "fake-model"

[store]
path = "{tmp_path / "data"}"

[web]
enabled = false

[telegram]
enabled = true
api_base_url = "{junk.base_url}"
"""
        )
        env: dict[str, Any] = {**os.environ, "TELEGRAM_BOT_TOKEN": TOKEN}
        cmd = [sys.executable, "-m", "channels.main", "serve", "--config", str(config)]
        with anyio.fail_after(60):
            done = await anyio.run_process(cmd, env=env, check=False, stdout=subprocess.DEVNULL)
    assert done.returncode == 1
    last = done.stderr.decode().strip().splitlines()[-1]
    assert last == (
        f"hero-agent: error: telegram: telegram.api_base_url ({junk.base_url}) does not answer like "
        "the Bot API: the answer is not JSON"
    )
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr and "unexpected error" not in stderr and TOKEN not in stderr
