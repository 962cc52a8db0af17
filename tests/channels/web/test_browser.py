"""The web page in a real browser: Playwright's async API drives Debian's chromium against the real
server running in the test's event loop."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Dialog, Page, async_playwright, expect

from store import Scope
from tests.channels.web.conftest import Web
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_text, reply_tool_calls

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
TIMEOUT_MS = 15_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def _send(page: Page, text: str) -> None:
    # while a reply is still streaming the page does not send (Send is disabled until it ends)
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
    box = page.get_by_label("Message (Enter sends")
    await box.fill(text)
    await box.press("Enter")


async def test_chat_rename_delete_context_reload(browser: Browser, web: Web, fake: FakeOpenAI) -> None:
    expect.set_options(timeout=TIMEOUT_MS)
    page = await browser.new_page(viewport={"width": 1200, "height": 800})

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.on("dialog", accept)
    await page.goto(web.base_url + "/")

    # the server has tokens: the page asks once and keeps it in localStorage
    await expect(page.locator("#token-dialog")).to_be_visible()
    await page.get_by_label("Token", exact=True).fill("tok-alice")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("body")).to_have_attribute("data-loaded", "none")

    # a streamed reply, with tool activity
    fake.enqueue(
        reply_tool_calls([("call_1", "current_datetime", "{}")]),
        reply_text("It is late, go to sleep.", chunks=6, chunk_delay=0.3),
    )
    await _send(page, "what time is it?")
    reply = page.locator(".message.assistant").last
    # streamed: the page shows a partial reply before the whole one
    await expect(reply.locator(".text")).to_have_text(re.compile(r"^It(?!.*sleep\.$)"))
    await expect(reply.locator(".text")).to_have_text("It is late, go to sleep.")
    await expect(page.locator(".tool").first).to_contain_text("current_datetime")
    await _send(page, "hello browser")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: hello browser")

    # slash commands typed in the input show their output
    await _send(page, "/help")
    await expect(page.locator(".message.command").last).to_contain_text("/clear")

    # rename from the sidebar (keyboard: Enter saves)
    item = page.locator(".conversation").first
    await item.get_by_role("button", name=re.compile("^Rename")).click()
    title = page.get_by_label("New title")
    await title.fill("Bedtime chat")
    await title.press("Enter")
    await expect(page.locator(".conversation .conversation-title").first).to_have_text("Bedtime chat")
    alice = Scope("default", "alice")
    (conv,) = (await web.store.list_conversations(alice)).items
    assert conv.title == "Bedtime chat"

    # reload: the token is remembered and the history is shown
    await page.reload()
    await expect(page.locator("#token-dialog")).to_be_hidden()
    await expect(page.locator(".message.user .text")).to_have_text(["what time is it?", "hello browser"])
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: hello browser")
    await expect(page.locator("#conversation-title")).to_have_text("Bedtime chat")

    # switch context: an empty workspace, then a turn stored there
    await page.get_by_role("combobox", name="Context").fill("work")
    await page.get_by_role("button", name="Switch").click()
    await expect(page.locator("#no-conversations")).to_be_visible()
    await expect(page.locator(".message")).to_have_count(0)
    await _send(page, "in the work context")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: in the work context")
    work = (await web.store.list_conversations(Scope("work", "alice"))).items
    assert len(work) == 1 and work[0].message_count == 2

    # back to default, then delete the renamed conversation (the confirm dialog is accepted)
    await page.get_by_role("combobox", name="Context").fill("default")
    await page.get_by_role("button", name="Switch").click()
    await expect(page.locator(".conversation .conversation-title")).to_have_text(["Bedtime chat"])
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "web.png"), full_page=True)
    await page.get_by_role("button", name="Delete Bedtime chat").click()
    await expect(page.locator(".conversation")).to_have_count(0)
    assert (await web.store.list_conversations(alice, archived=None)).items == []
    await page.close()


async def test_memories_view_and_archived_turns(browser: Browser, web: Web) -> None:
    expect.set_options(timeout=TIMEOUT_MS)
    alice = Scope("default", "alice")
    await web.store.add_memory(alice, "Alice drinks tea")
    page = await browser.new_page(viewport={"width": 420, "height": 800})  # phone-sized
    await page.goto(web.base_url + "/")
    await page.evaluate("localStorage.setItem('hero.token', 'tok-alice')")
    await page.reload()
    await _send(page, "before clear")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: before clear")
    await page.get_by_role("button", name="Clear").click()
    await expect(page.locator(".message.archived")).to_have_count(2)  # cleared turns stay visible, dimmed

    # on a phone the conversation list is an overlay: open it, pick the conversation, it closes again
    sidebar = page.get_by_role("navigation", name="Conversations")
    await expect(sidebar).to_be_hidden()
    await page.locator("#toggle-sidebar").click()
    await expect(sidebar).to_be_visible()
    await sidebar.locator(".conversation-title").first.click()
    await expect(sidebar).to_be_hidden()
    await expect(page.locator("#toggle-sidebar")).to_have_attribute("aria-expanded", "false")

    await page.get_by_role("button", name="Memories").click()
    await expect(page.locator(".memory")).to_have_text([re.compile("Alice drinks tea")])
    await page.get_by_role("button", name="Forget: Alice drinks tea").click()
    await expect(page.locator("#no-memories")).to_be_visible()
    assert (await web.store.list_memories(alice)).items == []

    # /context typed in the input switches the page's context
    await page.get_by_role("button", name="Memories").click()
    await _send(page, "/context lab")
    await expect(page.get_by_role("combobox", name="Context")).to_have_value("lab")
    await expect(page.locator(".message.command").last).to_contain_text("lab")
    await page.close()
