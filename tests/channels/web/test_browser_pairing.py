"""The web page's "Link Telegram" entry in a real browser (Debian's chromium via Playwright)."""

from __future__ import annotations

import time

import pytest
from playwright.async_api import Browser, Dialog, expect

from store import PairingCode
from tests.channels.web.conftest import Web
from tests.channels.web.test_browser import TIMEOUT_MS

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def test_link_telegram_with_a_pairing_code(browser: Browser, web: Web) -> None:
    expect.set_options(timeout=TIMEOUT_MS)
    now = int(time.time() * 1000)
    await web.store.links.add_pairing_code(
        PairingCode("telegram", "K7K7K7K7", "5151", "Ann", "", now, now + 60_000)
    )
    page = await browser.new_page(viewport={"width": 1200, "height": 800})
    await page.goto(web.base_url + "/")
    await page.evaluate("localStorage.setItem('hero.token', 'tok-alice')")
    await page.reload()
    answers = iter(["k7k7 k7k7", "K7K7K7K7"])
    prompts: list[str] = []

    async def answer(dialog: Dialog) -> None:
        prompts.append(dialog.message)
        await dialog.accept(next(answers))

    page.on("dialog", answer)
    await page.get_by_role("button", name="Link Telegram").click()
    await expect(page.locator("#status")).to_have_text("Linked Telegram id 5151 to you (alice).")
    assert await web.agent.pairing.linked_user(5151) == "alice"
    # the same code again: the server's one-line reason is shown as an error
    await page.get_by_role("button", name="Link Telegram").click()
    await expect(page.locator("#status")).to_contain_text("no pending pairing code K7K7K7K7")
    assert prompts == ["The pairing code the bot gave the Telegram user:"] * 2
    await page.close()
