"""Images and voice on the page, in a real Chromium: the Attach button (a file picker), paste and
drag-and-drop (real ClipboardEvent/DragEvent carrying a DataTransfer, dispatched in the page), the
request the model got, stored images shown after a reload; the microphone with Chromium's fake
capture device, and its absence outside a secure context."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, FilePayload, Page, async_playwright, expect

from tests.channels.web.conftest import CHROMIUM, CHROMIUM_FLAGS, Web, open_page, serve_web, web_settings
from tests.channels.web.test_page import _axe
from tests.fakes.openai_server import FakeOpenAI
from tests.media_files import png

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

#: a host name that is not "potentially trustworthy" (not localhost, not a loopback IP literal), so
#: a page loaded from it over http is no secure context; Chromium resolves it to 127.0.0.1
INSECURE_HOST = "insecure.test"
FLAGS = [
    *CHROMIUM_FLAGS,
    "--use-fake-ui-for-media-stream",  # grant getUserMedia without asking
    "--use-fake-device-for-media-stream",  # a synthetic microphone (a beep)
    f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1",
]

RED, GREEN, BLUE = png(6, 4, (220, 20, 20)), png(5, 5, (20, 200, 20)), png(4, 6, (20, 20, 220))

#: a file put into a DataTransfer and dispatched as a paste on the message box or a drop on the
#: composer, the way a browser does it for a user's paste or drop
DISPATCH = """([how, name, type, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  const init = { bubbles: true, cancelable: true };
  if (how === "paste") {
    const box = document.getElementById("message-input");
    box.dispatchEvent(new ClipboardEvent("paste", { ...init, clipboardData: data }));
  } else {
    const composer = document.getElementById("composer");
    composer.dispatchEvent(new DragEvent("dragover", { ...init, dataTransfer: data }));
    composer.dispatchEvent(new DragEvent("drop", { ...init, dataTransfer: data }));
  }
}"""


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def web(tmp_path: Path, fake: FakeOpenAI) -> AsyncIterator[Web]:
    settings = web_settings(tmp_path, fake.base_url)
    settings = dataclasses.replace(
        settings, llm=dataclasses.replace(settings.llm, transcription_model="whisper-1")
    )
    async with serve_web(settings) as running:
        yield running


async def dispatch(page: Page, how: str, name: str, data: bytes) -> None:
    await page.evaluate(DISPATCH, [how, name, "image/png", base64.b64encode(data).decode()])


def sent_images(fake: FakeOpenAI, index: int) -> list[bytes]:
    urls = fake.image_urls(fake.requests[index])
    return [base64.b64decode(u.partition(",")[2]) for u in urls]


async def test_images_by_button_paste_and_drop_reach_the_model_and_stay_in_history(
    browser: Browser, web: Web, fake: FakeOpenAI
) -> None:
    page = await open_page(browser, web)
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    await expect(page.locator("#media-caps")).to_contain_text("Images: up to 4, 5 MB each")
    await page.locator("#image-input").set_input_files(
        [FilePayload(name="red.png", mimeType="image/png", buffer=RED)]
    )
    await dispatch(page, "paste", "green.png", GREEN)
    await dispatch(page, "drop", "blue.png", BLUE)
    await dispatch(page, "drop", "extra.png", png(3, 3))
    previews = page.get_by_role("list", name="Images to send").locator("img")
    await expect(previews).to_have_count(4)
    await page.get_by_role("button", name="Remove extra.png").click()
    await expect(previews).to_have_count(3)
    await expect(page.get_by_role("status")).to_have_text("Removed extra.png.")
    box = page.get_by_label("Message (Enter sends")
    await box.fill("three colours")
    await box.press("Enter")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: three colours")
    assert sent_images(fake, 0) == [RED, GREEN, BLUE]
    await expect(previews).to_have_count(0)  # sent: the composer is empty again
    await expect(page.locator(".message.user .images img")).to_have_count(3)

    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-loaded", re.compile(".+"))
    stored = page.locator(".message.user .images img")
    await expect(stored).to_have_count(3)
    await expect(stored.first).to_have_attribute("alt", "red.png")
    srcs = [await img.get_attribute("src") for img in await stored.all()]
    assert all(s and s.startswith("/api/attachments/") and "?t=" in s for s in srcs), srcs
    # the images really loaded from the same origin under the page's img-src 'self' (their loads run
    # after the elements exist: waited for, not assumed; a refused or broken one is complete too)
    await page.wait_for_function(
        "() => [...document.querySelectorAll('.message.user .images img')].every((i) => i.complete)",
        timeout=10_000,
    )
    sizes = await stored.evaluate_all(
        "(imgs) => imgs.map((i) => [i.complete, i.naturalWidth, i.naturalHeight])"
    )
    assert sizes == [[True, 6, 4], [True, 5, 5], [True, 4, 6]]
    assert blocked == []


async def test_an_image_over_the_cap_or_not_an_image_is_refused_in_the_page(
    browser: Browser, tmp_path: Path, fake: FakeOpenAI
) -> None:
    settings = web_settings(tmp_path, fake.base_url)
    settings = dataclasses.replace(
        settings, agent=dataclasses.replace(settings.agent, max_attachment_bytes=2048)
    )
    big = png(400, 400, (1, 2, 3)) + b"\0" * 4096  # over 2 KB
    async with serve_web(settings) as web:
        page = await open_page(browser, web)
        await expect(page.locator("#media-caps")).to_contain_text("Images: up to 4, 2 KB each")
        await page.locator("#image-input").set_input_files(
            [
                FilePayload(name="big.png", mimeType="image/png", buffer=big),
                FilePayload(name="notes.txt", mimeType="text/plain", buffer=b"hello"),
            ]
        )
        status = page.get_by_role("status")
        await expect(status).to_contain_text(f"big.png is {round(len(big) / 1024)} KB, the limit is 2 KB")
        await expect(status).to_contain_text("notes.txt is not a PNG, JPEG, GIF or WebP image")
        await expect(page.locator("#pending-images")).to_be_hidden()
        assert fake.request_count == 0


async def test_microphone_records_and_the_transcript_is_the_users_bubble(
    browser: Browser, web: Web, fake: FakeOpenAI
) -> None:
    page = await open_page(browser, web)
    assert await page.evaluate("window.isSecureContext")  # http://127.0.0.1 is a secure context
    record = page.get_by_role("button", name="Record voice")
    await expect(record).to_be_visible()
    await page.locator("#image-input").set_input_files(
        [FilePayload(name="red.png", mimeType="image/png", buffer=RED)]
    )
    assert await _axe(page, "composer with a preview and the microphone") == []
    await page.get_by_role("button", name="Remove red.png").click()

    await record.click()
    stop = page.get_by_role("button", name="Stop recording")
    await expect(stop).to_have_attribute("aria-pressed", "true")
    await expect(page.get_by_role("status")).to_contain_text("Recording")
    await stop.click()
    user = page.locator(".message.user").last
    await expect(user.locator(".text")).to_have_text("hello from a voice note")
    await expect(user.locator(".meta")).to_have_text("You · 🎤 spoken, 1.5 s")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: hello from a voice note")
    [heard] = fake.audio_requests
    assert heard["type"].startswith("audio/webm") and heard["data"][:4] == b"\x1a\x45\xdf\xa3"
    assert heard["filename"] == "voice.webm"

    await page.reload()
    await expect(page.locator(".message.user .meta").last).to_have_text("You · 🎤 spoken, 1.5 s")
    await expect(page.locator(".message.user .text").last).to_have_text("hello from a voice note")


async def test_microphone_is_hidden_with_a_hint_outside_a_secure_context(browser: Browser, web: Web) -> None:
    context = await browser.new_context()
    await context.add_init_script(f"localStorage.setItem('hero.token', {json.dumps('tok-alice')})")
    page = await context.new_page()
    await page.goto(web.base_url.replace("127.0.0.1", INSECURE_HOST) + "/")
    await expect(page.locator("body")).to_have_attribute("data-loaded", re.compile(".+"))
    assert not await page.evaluate("window.isSecureContext")
    await expect(page.locator("#record")).to_be_hidden()
    await expect(page.locator("#media-caps")).to_contain_text(
        "Voice input needs a secure connection (HTTPS, or localhost)"
    )
    await expect(page.get_by_role("button", name="Attach images")).to_be_visible()
    await context.close()
