"""The page's rendering in a real browser: Markdown (tables, code, Copy), streaming Markdown, hostile
model output, the phone layout, dark mode, the usage charts, and an axe-core accessibility check of
every view in light and dark, desktop and phone (with screenshots saved as test artifacts)."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any, Literal

import axe_playwright_python
import pytest
from playwright.async_api import Browser, Dialog, FilePayload, Page, Request, Response, expect

from store import Scope
from tests.channels.web.conftest import ARTIFACTS, DESKTOP, PHONE, Web, open_page, send_message
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_error, reply_text, reply_tool_calls
from tests.media_files import png

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

ALICE = Scope("default", "alice")
#: axe-core as shipped by the axe-playwright-python package (PyPI), injected by the test
AXE_JS = Path(axe_playwright_python.__file__).parent / "axe.min.js"

MARKDOWN = """## Shopping list

- apples
- pears

| fruit | count |
|:------|------:|
| apple | 3 |
| pear | 12 |

Inline `x = 1` and a block:

```python
def greet(name):
    return f"hi {name}"
```

See [the docs](https://example.org/docs).
"""
CODE = 'def greet(name):\n    return f"hi {name}"\n'

HOSTILE = """Hi <script>alert('script')</script> there.

<img src=x onerror="alert('img')"> and <svg onload="alert('svg')"></svg>

[click me](javascript:alert('link')) [mixed case](JaVaScRiPt:alert('link2'))
<a href="javascript:alert('raw')">raw link</a>

![remote pixel](http://203.0.113.5/pixel.png) ![same site](/static/leak.png)

<form action="http://203.0.113.5/"><input name="q"><button>go</button></form>
<iframe src="http://203.0.113.5/"></iframe>

[data link](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==) <http://203.0.113.5/auto>

```"><img src=x onerror=alert('lang')>
code
```
"""

#: instrumentation added to the page by the tests (never part of the page): the copy fallback is
#: forced by hiding the Clipboard API, copies are recorded, and re-renders of replies are timed
INSTRUMENT = """
Object.defineProperty(Navigator.prototype, "clipboard", { get: () => undefined, configurable: true });
window.__copied = [];
document.addEventListener("copy", () => {
  const a = document.activeElement;
  window.__copied.push(a && "value" in a ? a.value.slice(a.selectionStart, a.selectionEnd) : "");
});
window.__renders = [];
document.addEventListener("markdown-rendered", (e) => window.__renders.push(e.detail.started));
"""


@pytest.fixture(autouse=True)
def _expect_timeout() -> None:
    expect.set_options(timeout=15_000)


async def _instrumented(browser: Browser, web: Web) -> Page:
    context = await browser.new_context(viewport=DESKTOP)
    await context.add_init_script("localStorage.setItem('hero.token', 'tok-alice')")
    await context.add_init_script(INSTRUMENT)
    page = await context.new_page()
    await page.goto(web.base_url + "/")
    await expect(page.locator("body")).to_have_attribute("data-loaded", "none")
    return page


async def test_markdown_tables_code_and_copy(browser: Browser, web: Web, fake: FakeOpenAI) -> None:
    page = await _instrumented(browser, web)
    fake.enqueue(reply_text(MARKDOWN, chunks=5))
    await send_message(page, "a list please")
    reply = page.locator(".message.assistant .markdown").first
    await expect(reply.locator("h2")).to_have_text("Shopping list")
    await expect(reply.locator("ul > li")).to_have_text(["apples", "pears"])
    await expect(reply.locator("th")).to_have_text(["fruit", "count"])
    await expect(reply.locator("td")).to_have_text(["apple", "3", "pear", "12"])
    await expect(reply.locator("td.align-right")).to_have_text(["3", "12"])
    await expect(reply.locator("p > code")).to_have_text("x = 1")
    await expect(reply.locator(".code-head span")).to_have_text("python")
    await expect(reply.locator("pre code .hljs-keyword").first).to_have_text("def")  # highlighted
    link = reply.get_by_role("link", name="the docs")
    await expect(link).to_have_attribute("href", "https://example.org/docs")
    await expect(link).to_have_attribute("target", "_blank")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")
    # the user's own message stays plain text
    await send_message(page, "**not bold** and `no code`")
    await expect(page.locator(".message.user .text").last).to_have_text("**not bold** and `no code`")
    await expect(page.locator(".message.user strong")).to_have_count(0)

    # Copy works without navigator.clipboard (a plain-http LAN address has none)
    assert await page.evaluate("navigator.clipboard") is None
    copy = reply.get_by_role("button", name="Copy python code")
    await copy.click()
    await expect(copy).to_have_text("Copied")
    assert await page.evaluate("window.__copied") == [CODE]
    await page.context.close()


async def test_markdown_renders_while_streaming_at_most_every_100_ms(
    browser: Browser, web: Web, fake: FakeOpenAI
) -> None:
    paragraphs = [f"Paragraph {i}: " + "word " * 40 for i in range(200)]
    text = "## Long answer\n\n" + "\n\n".join(paragraphs)
    text = text[:20_000]
    page = await _instrumented(browser, web)
    fake.enqueue(reply_text(text, chunks=400, chunk_delay=0.005))
    await send_message(page, "write a lot")
    reply = page.locator(".message.assistant .markdown").last
    await expect(reply.locator("h2")).to_have_text("Long answer")
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()  # the stream has ended
    rendered = await reply.inner_text()
    last_words = text.rsplit("Paragraph", 1)[1].split()[:3]
    assert " ".join(last_words) in rendered  # the whole reply, rendered at the end
    assert len(await reply.locator("p").all()) == text.count("Paragraph")
    renders: list[float] = await page.evaluate("window.__renders")
    assert len(renders) >= 3, renders  # rendered as it streamed, not only at the end
    # the start of each render (the page's "markdown-rendered" event; a busy machine only makes the
    # gaps longer): every streaming re-render starts at least 100 ms after the one before (without
    # the throttle the gaps would be the 5 ms between pieces); the last render, at the stream's end,
    # may come sooner. 1 ms of slack for the timer's rounding.
    gaps = [b - a for a, b in itertools.pairwise(renders[:-1])]
    assert min(gaps) >= 99, gaps
    await page.context.close()


async def _dom_problems(page: Page, origin: str) -> list[str]:
    return await page.evaluate(  # type: ignore[no-any-return]
        """(origin) => {
          const problems = [];
          const root = document.getElementById("messages");
          for (const node of root.querySelectorAll("*")) {
            const tag = node.tagName.toLowerCase();
            if (["script", "iframe", "form", "input", "object", "embed", "svg", "style"].includes(tag)) {
              problems.push(`element ${tag}`);
            }
            for (const attr of node.attributes) {
              if (attr.name.startsWith("on")) problems.push(`${tag} ${attr.name}`);
            }
            if (node.hasAttribute("href")) {
              const url = new URL(node.getAttribute("href"), location.href);
              if (!["http:", "https:", "mailto:"].includes(url.protocol)) problems.push(`href ${url.href}`);
            }
            if (node.hasAttribute("src")) {
              const url = new URL(node.getAttribute("src"), location.href);
              if (url.protocol !== "data:" && url.origin !== origin) problems.push(`src ${url.href}`);
            }
          }
          return problems;
        }""",
        origin,
    )


async def test_hostile_model_output_runs_and_loads_nothing(
    browser: Browser, web: Web, fake: FakeOpenAI
) -> None:
    page = await _instrumented(browser, web)
    dialogs: list[str] = []
    requests: list[str] = []

    async def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    def on_request(request: Request) -> None:
        requests.append(request.url)

    page.on("dialog", on_dialog)
    page.on("request", on_request)
    fake.enqueue(reply_text(HOSTILE, chunks=7))
    await send_message(page, "be evil")
    reply = page.locator(".message.assistant .markdown").last
    await expect(reply).to_contain_text("<script>alert('script')</script>")  # shown as text
    await expect(reply.get_by_role("link", name="[image: remote pixel]")).to_have_attribute(
        "href", "http://203.0.113.5/pixel.png"
    )
    # a later turn proves the page went on working after rendering it
    await send_message(page, "still there?")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: still there?")
    assert await _dom_problems(page, web.base_url) == []
    await page.reload()
    await expect(page.locator(".message.assistant .markdown").first).to_contain_text("there.")
    await send_message(page, "and after a reload?")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: and after a reload?")
    assert await _dom_problems(page, web.base_url) == []
    assert dialogs == []
    assert [url for url in requests if not url.startswith(web.base_url + "/")] == []
    # nothing the reply named was fetched, not even from the page's own origin
    assert [url for url in requests if "leak" in url or url.endswith("/x")] == []
    await page.context.close()


async def _axe(page: Page, view: str) -> list[str]:
    """Serious and critical axe-core findings of the page as it is now."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE_JS.read_text())
    result: dict[str, Any] = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{view}: {v['id']} ({v['impact']}) {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def _note_failure(failed: list[str], response: Response) -> None:
    if response.status >= 400:
        failed.append(response.url)


async def _seed(web: Web, fake: FakeOpenAI, browser: Browser) -> None:
    """A conversation with an image, Markdown, a table, code, a tool block and a failed turn; a memory;
    usage."""
    await web.store.memories.add(ALICE, "Alice drinks tea")
    page = await open_page(browser, web)
    await page.locator("#image-input").set_input_files(
        [FilePayload(name="dot.png", mimeType="image/png", buffer=png())]
    )
    await send_message(page, "a picture")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: a picture")
    fake.enqueue(reply_tool_calls([("call_1", "current_datetime", "{}")]), reply_text(MARKDOWN, chunks=3))
    await send_message(page, "a list please")
    await expect(page.locator(".code-block")).to_have_count(1)
    fake.enqueue(reply_error(500))
    await send_message(page, "and now fail")
    await expect(page.locator(".failure")).to_have_count(1)
    await page.context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_layout_dark_mode_charts_and_accessibility(
    browser: Browser, web: Web, fake: FakeOpenAI, scheme: Literal["light", "dark"]
) -> None:
    await _seed(web, fake, browser)
    findings: list[str] = []
    background = {"light": "rgb(246, 247, 249)", "dark": "rgb(20, 23, 28)"}[scheme]
    ARTIFACTS.mkdir(exist_ok=True)
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page = await open_page(browser, web, viewport=viewport, color_scheme=scheme)
        view = f"{name}/{scheme}"
        failed: list[str] = []
        page.on("response", functools.partial(_note_failure, failed))
        await page.reload()  # every file of the page is there (the favicon too): no 404 on a load
        await expect(page.locator(".code-block")).to_have_count(1)
        assert failed == [], failed
        # the system setting decides the colours
        assert await page.evaluate("getComputedStyle(document.body).backgroundColor") == background
        # one header row, no sideways scrolling
        header = await page.locator(".topbar").bounding_box()
        assert header is not None and header["height"] <= 56, (view, header)
        widths = await page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth,"
            " document.getElementById('message-log').scrollWidth,"
            " document.getElementById('message-log').clientWidth]"
        )
        assert widths[0] <= widths[1] and widths[2] <= widths[3], (view, widths)
        await expect(page.get_by_role("button", name="Retry: The reply failed.")).to_be_visible()
        await page.screenshot(path=str(ARTIFACTS / f"web-{name}-{scheme}.png"))
        await page.locator(".tool-block summary").click()  # the tool block open, for the check too
        await expect(page.locator(".message.user .images img")).to_have_count(1)  # the stored image
        # an image waiting in the composer: its preview and Remove button are checked too
        await page.locator("#image-input").set_input_files(
            [FilePayload(name="dot.png", mimeType="image/png", buffer=png())]
        )
        await expect(page.get_by_role("button", name="Remove dot.png")).to_be_visible()
        findings += await _axe(page, f"{view} chat")
        # the last turn's Edit, its inline editor open (Regenerate is checked by the browser tests)
        await page.get_by_role("button", name="Edit your last message").click()
        await expect(page.get_by_label("Edit your message")).to_be_focused()
        findings += await _axe(page, f"{view} edit")
        await page.get_by_role("button", name="Cancel").click()

        menu = page.get_by_role("button", name="Menu")
        if name == "phone":
            await menu.click()
        await page.get_by_role("button", name="Memories").click()
        await expect(page.locator(".memory-text")).to_have_text(["Alice drinks tea"])
        findings += await _axe(page, f"{view} memories")
        await page.get_by_role("button", name="Close memories").click()

        if name == "phone":
            await menu.click()
        await page.get_by_role("button", name="Usage").click()
        panel = page.get_by_role("complementary", name="Usage")
        await expect(panel.locator("#usage-tokens rect")).to_have_count(1)  # one model on one day
        await expect(panel.locator("#usage-latency circle")).to_have_count(1)
        await expect(panel.locator(".usage-table tbody tr")).to_have_count(1)
        await expect(panel.locator(".usage-table tbody td").nth(2)).to_have_text("4")  # calls
        if name == "desktop":
            await page.screenshot(path=str(ARTIFACTS / f"web-usage-{scheme}.png"))
        findings += await _axe(page, f"{view} usage")
        await page.get_by_role("button", name="Close usage").click()

        if name == "phone":
            await menu.click()
        await page.get_by_role("button", name="Token").click()
        dialog = page.get_by_role("dialog", name="Access token")
        await dialog.get_by_label("Token", exact=True).fill("tok-wrong")
        await dialog.get_by_role("button", name="Save").click()
        await expect(dialog.get_by_role("alert")).to_have_text("That token was not accepted.")
        findings += await _axe(page, f"{view} token dialog")
        await page.context.close()
    assert findings == []
