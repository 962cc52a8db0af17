"""Web channel fixtures: the real WebChannel (uvicorn on a free port) run the way the daemon runs it,
on the real embedded store in a tmp dir and the real agent talking HTTP to ``FakeOpenAI``."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
import pytest
from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect

from agent.core import Agent
from agent.factory import open_agent
from channels.daemon import _run_channel
from channels.web import WebChannel
from config.settings import LLMSettings, MemorySettings, Settings, StoreSettings, WebSettings
from store import Store, open_store
from tests.fakes.openai_server import FakeOpenAI

TOKENS = (("tok-alice", "alice"), ("tok-bob", "bob"))
ALICE = {"Authorization": "Bearer tok-alice"}
BOB = {"Authorization": "Bearer tok-bob"}


def web_settings(tmp_path: Path, llm_url: str, **web: Any) -> Settings:
    web.setdefault("tokens", TOKENS)
    web.setdefault("shutdown_deadline_s", 2.0)
    return Settings(
        llm=LLMSettings(base_url=llm_url, api_key="sk-test", model="fake-model", max_retries=0),
        store=StoreSettings(path=tmp_path / "data"),
        web=WebSettings(port=0, **web),
        memory=MemorySettings(enabled=False),
    )


@dataclass
class Web:
    """A running web channel and what it stands on."""

    base_url: str
    channel: WebChannel
    agent: Agent
    store: Store
    settings: Settings

    def client(self, headers: dict[str, str] | None = None, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=headers or {}, timeout=20, **kw)


@asynccontextmanager
async def serve_web(settings: Settings) -> AsyncIterator[Web]:
    async with open_store(settings) as store, open_agent(settings, store) as agent:
        channel = WebChannel(settings, agent)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            await tg.start(_run_channel, channel, stop, 30.0)
            try:
                yield Web(f"http://127.0.0.1:{channel.port}", channel, agent, store, settings)
            finally:
                stop.set()


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def web(tmp_path: Path, fake: FakeOpenAI) -> AsyncIterator[Web]:
    async with serve_web(web_settings(tmp_path, fake.base_url)) as running:
        yield running


@pytest.fixture
async def alice(web: Web) -> AsyncIterator[httpx.AsyncClient]:
    async with web.client(ALICE) as client:
        yield client


@pytest.fixture
async def bob(web: Web) -> AsyncIterator[httpx.AsyncClient]:
    async with web.client(BOB) as client:
        yield client


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``[(event, data), ...]`` from an SSE body (comments skipped)."""
    events: list[tuple[str, dict[str, Any]]] = []
    for block in text.split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


async def chat(
    client: httpx.AsyncClient, body: dict[str, Any], **kw: Any
) -> list[tuple[str, dict[str, Any]]]:
    """POST /api/chat and read the whole stream."""
    with anyio.fail_after(20):
        resp = await client.post("/api/chat", json=body, **kw)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    return parse_sse(resp.text)


def with_web(settings: Settings, **web: Any) -> Settings:
    return replace(settings, web=replace(settings.web, **web))


# -- the page in a real browser (Playwright's async API driving Debian's chromium) ----------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: screenshots of the browser tests (ignored by git; docs/img holds the copies the docs show)
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One chromium per test module (each test opens its own context: separate storage)."""
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def open_page(
    browser: Browser,
    web: Web,
    *,
    token: str | None = "tok-alice",
    viewport: ViewportSize | None = None,
    color_scheme: Literal["light", "dark"] = "light",
) -> Page:
    """A page of a fresh browser context, the token already in its localStorage, loaded."""
    context = await browser.new_context(viewport=viewport or DESKTOP, color_scheme=color_scheme)
    if token:
        await context.add_init_script(f"localStorage.setItem('hero.token', {json.dumps(token)})")
    page = await context.new_page()
    await page.goto(web.base_url + "/")
    if token:  # without one, a server with tokens shows the token dialog instead
        await expect(page.locator("body")).to_have_attribute("data-loaded", re.compile(".+"))
    return page


async def send_message(page: Page, text: str) -> None:
    # while a reply is still streaming the page does not send (Send is disabled until it ends)
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
    box = page.get_by_label("Message (Enter sends")
    await box.fill(text)
    await box.press("Enter")
