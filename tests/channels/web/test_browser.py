"""The web page in a real browser: conversations, streaming, tool blocks, failures, Retry, an
unreachable daemon. Playwright's async API drives Debian's chromium (one per module) against the real
server running in the test's event loop."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import anyio
import pytest
from playwright.async_api import APIResponse, Browser, Dialog, Request, Route, expect

from store import Scope
from tests.channels.web.conftest import (
    PHONE,
    Web,
    open_page,
    send_message,
    serve_web,
    web_settings,
    with_web,
)
from tests.channels.web.test_page import _axe as axe_findings
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_error, reply_text, reply_tool_calls
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

TIMEOUT_MS = 15_000
ALICE = Scope("default", "alice")


@pytest.fixture(autouse=True)
def _expect_timeout() -> None:
    expect.set_options(timeout=TIMEOUT_MS)


async def test_chat_rename_delete_context_reload(browser: Browser, web: Web, fake: FakeOpenAI) -> None:
    page = await open_page(browser, web, token=None)

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.on("dialog", accept)

    # the server has tokens: the page asks once; a wrong token's error shows inside the dialog
    dialog = page.locator("#token-dialog")
    await expect(dialog).to_be_visible()
    await page.get_by_label("Token", exact=True).fill("tok-wrong")
    await page.get_by_role("button", name="Save").click()
    await expect(dialog.get_by_role("alert")).to_have_text("That token was not accepted.")
    await expect(dialog).to_be_visible()
    await page.get_by_label("Token", exact=True).fill("tok-alice")
    await page.get_by_role("button", name="Save").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator("body")).to_have_attribute("data-loaded", "none")

    # a streamed reply
    fake.enqueue(reply_text("It is late, go to **sleep**.", chunks=6, chunk_delay=0.3))
    await send_message(page, "what time is it?")
    reply = page.locator(".message.assistant").last
    await expect(reply.locator(".text")).to_have_text(re.compile(r"^It(?!.*sleep\.$)"))  # partial first
    await expect(reply.locator(".text")).to_have_text("It is late, go to sleep.")
    await expect(reply.locator(".text strong")).to_have_text("sleep")
    await expect(page.locator("#model-name")).to_have_text("fake-model")
    await expect(reply.locator(".meta")).to_have_text("Agent · fake-model")
    await send_message(page, "hello browser")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: hello browser")

    # slash commands typed in the input show their output
    await send_message(page, "/help")
    await expect(page.locator(".message.command").last).to_contain_text("/clear")

    # rename from the item's menu (keyboard: Enter saves)
    await page.get_by_role("button", name="Actions for what time is it?").click()
    await page.get_by_role("menuitem", name="Rename").click()
    title = page.get_by_label("New title")
    await title.fill("Bedtime chat")
    await title.press("Enter")
    await expect(page.locator(".conversation .conversation-title").first).to_have_text("Bedtime chat")
    (conv,) = (await web.store.conversations.list(ALICE)).items
    assert conv.title == "Bedtime chat"

    # reload: the token is remembered and the history is shown
    await page.reload()
    await expect(page.locator("#token-dialog")).to_be_hidden()
    await expect(page.locator(".message.user .text")).to_have_text(["what time is it?", "hello browser"])
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: hello browser")
    await expect(page.locator("#conversation-title")).to_have_text("Bedtime chat")

    # search: the list route's text filter
    await _create_conversation(web, "Groceries for the week")
    await page.get_by_label("Search conversations").fill("groceries")
    await expect(page.locator(".conversation .conversation-title")).to_have_text(["Groceries for the week"])
    await page.get_by_label("Search conversations").fill("")
    await expect(page.locator(".conversation")).to_have_count(2)

    # switch context: an empty workspace, then a turn stored there
    await page.get_by_role("combobox", name="Context").fill("work")
    await page.get_by_role("button", name="Switch").click()
    await expect(page.locator("#no-conversations")).to_be_visible()
    await expect(page.locator(".message")).to_have_count(0)
    await send_message(page, "in the work context")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: in the work context")
    work = (await web.store.conversations.list(Scope("work", "alice"))).items
    assert len(work) == 1 and work[0].message_count == 2

    # back to default, then delete the renamed conversation from its menu (the confirm is accepted)
    await page.get_by_role("combobox", name="Context").fill("default")
    await page.get_by_role("button", name="Switch").click()
    await expect(page.locator(".conversation")).to_have_count(2)
    await page.get_by_role("button", name="Actions for Bedtime chat").click()
    await page.get_by_role("menuitem", name="Delete").click()
    await expect(page.locator(".conversation .conversation-title")).to_have_text(["Groceries for the week"])
    assert [c.title for c in (await web.store.conversations.list(ALICE, archived=None)).items] == [
        "Groceries for the week"
    ]
    await page.context.close()


async def _create_conversation(web: Web, title: str) -> None:
    await web.store.conversations.create(ALICE, title)


async def test_memories_panel_and_archived_turns_on_a_phone(browser: Browser, web: Web) -> None:
    await web.store.memories.add(ALICE, "Alice drinks tea")
    page = await open_page(browser, web, viewport=PHONE)
    await send_message(page, "before clear")
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

    # memories are behind the header's menu; the panel shows kind, date and id, and closes
    await expect(page.get_by_role("button", name="Memories")).to_be_hidden()
    await page.get_by_role("button", name="Menu").click()
    await page.get_by_role("button", name="Memories").click()
    panel = page.get_by_role("complementary", name="Memories")
    (memory,) = (await web.store.memories.list(ALICE)).items
    await expect(panel.locator(".memory")).to_have_count(1)
    await expect(panel.locator(".memory-text")).to_have_text("Alice drinks tea")
    await expect(panel.locator(".memory-meta")).to_contain_text(f"id {memory.sid}")
    await expect(panel.locator(".memory-meta time")).to_have_attribute("datetime", re.compile(r"^\d{4}-"))
    await page.get_by_role("button", name="Close memories").click()
    await expect(panel).to_be_hidden()
    await expect(page.locator(".message.archived")).to_have_count(2)  # the chat is back

    await page.get_by_role("button", name="Menu").click()
    await page.get_by_role("button", name="Memories").click()
    await page.get_by_role("button", name="Forget: Alice drinks tea").click()
    await expect(page.locator("#no-memories")).to_be_visible()
    assert (await web.store.memories.list(ALICE)).items == []
    await page.keyboard.press("Escape")
    await expect(panel).to_be_hidden()

    # /context typed in the input switches the page's context
    await send_message(page, "/context lab")
    await page.get_by_role("button", name="Menu").click()
    await expect(page.get_by_role("combobox", name="Context")).to_have_value("lab")
    await expect(page.locator(".message.command").last).to_contain_text("lab")
    await page.context.close()


async def test_tool_blocks_live_and_after_reload(browser: Browser, web: Web, fake: FakeOpenAI) -> None:
    page = await open_page(browser, web)
    fake.enqueue(
        reply_tool_calls([("call_1", "current_datetime", '{"timezone": "UTC"}')]),
        reply_text("It is late.", chunks=2),
    )
    await send_message(page, "what time is it?")
    await expect(page.locator(".message.assistant .text").last).to_have_text("It is late.")

    async def block_texts() -> tuple[str, str, str, str]:
        block = page.locator(".tool-block")
        await expect(block).to_have_count(1)
        await expect(block).to_have_class(re.compile(r"\bok\b"))
        summary = await block.locator("summary").inner_text()
        await block.locator("summary").click()  # collapsed until opened
        await expect(block.locator(".tool-result")).to_be_visible()
        return (
            summary,
            await block.locator(".tool-args").inner_text(),
            await block.locator(".tool-result").inner_text(),
            await block.locator(".tool-state").inner_text(),
        )

    live = await block_texts()
    assert live[0].startswith("⚙ current_datetime")
    assert json.loads(live[1]) == {"timezone": "UTC"}
    assert re.fullmatch(r"ok · \d+ ms", live[3]), live[3]
    assert live[2] and live[2] != "…"
    await page.reload()
    await expect(page.locator(".message.assistant .text").last).to_have_text("It is late.")
    assert await block_texts() == live  # one block, the same name, arguments, result and duration
    await page.context.close()


async def test_failure_keeps_its_reason_after_reload_and_offers_retry(
    browser: Browser, web: Web, fake: FakeOpenAI
) -> None:
    page = await open_page(browser, web)
    fake.enqueue(reply_error(500))
    await send_message(page, "this one fails")
    failed = page.locator(".message.assistant").last
    await expect(failed.locator(".failure-reason")).to_contain_text("⚠")
    reason = await failed.locator(".failure-reason").inner_text()
    assert "500" in reason or "provider" in reason.lower(), reason
    await expect(failed.get_by_role("button", name=re.compile("^Retry"))).to_be_visible()
    await expect(page.get_by_label("Message (Enter sends")).to_have_value("")  # the server had it

    # after a reload the failed turn still says it failed (from the stored status) and offers Retry
    await page.reload()
    failed = page.locator(".message.assistant").last
    await expect(failed.locator(".meta")).to_contain_text("error")
    await expect(failed.locator(".failure-reason")).to_have_text("⚠ The reply failed.")
    conv = (await web.store.conversations.list(ALICE)).items[0]
    [user] = [m for m in (await web.store.messages.list(ALICE, conv.sid)).items if m.role == "user"]

    # Retry is one call: POST /api/chat naming the stored user message (retry_of), no new text
    posted: list[dict[str, object]] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/api/chat") and request.method == "POST":
            posted.append(json.loads(request.post_data or "{}"))

    page.on("request", on_request)
    await failed.get_by_role("button", name=re.compile("^Retry")).click()
    answer = page.locator("#messages > .message.assistant").last
    await expect(answer.locator(".text")).to_have_text("echo: this one fails")
    assert posted == [{"retry_of": user.sid, "conversation_id": conv.sid, "context_name": "default"}]
    # the failed reply is collapsed above the new one; the server answered the stored message
    group = page.locator(".superseded-group")
    await expect(group).to_have_count(1)
    await expect(group.locator("summary")).to_have_text("Replaced attempt")
    await expect(group.locator(".message.assistant")).to_be_hidden()
    msgs = (await web.store.messages.list(ALICE, conv.sid)).items
    assert [m.sid for m in msgs if m.role == "user"] == [user.sid]
    [old] = [m for m in msgs if m.status == "error"]
    assert old.superseded_by and old.superseded_by == msgs[-1].turn_id
    # a reload shows the same: the replaced attempt collapsed, the answer last, Regenerate on it
    await page.reload()
    await expect(page.locator(".superseded-group")).to_have_count(1)
    await expect(page.locator("#messages > .message.assistant .text").last).to_have_text(
        "echo: this one fails"
    )
    await expect(page.get_by_role("button", name="Regenerate the last reply")).to_have_count(1)
    await page.context.close()


async def test_regenerate_the_last_reply(browser: Browser, web: Web, fake: FakeOpenAI) -> None:
    page = await open_page(browser, web)
    await send_message(page, "first question")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: first question")
    await send_message(page, "tell me a joke")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: tell me a joke")
    # only the last turn has the buttons, reachable by keyboard
    regenerate = page.get_by_role("button", name="Regenerate the last reply")
    await expect(regenerate).to_have_count(1)
    await expect(page.get_by_role("button", name="Edit your last message")).to_have_count(1)
    assert await axe_findings(page, "regenerate") == []
    fake.enqueue(reply_text("A better joke."))
    await regenerate.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#messages > .message.assistant .text").last).to_have_text("A better joke.")
    group = page.locator(".superseded-group")
    await expect(group).to_have_count(1)
    await group.locator("summary").click()  # the replaced reply is still there, collapsed
    await expect(group.locator(".message.assistant .text")).to_have_text("echo: tell me a joke")
    assert await axe_findings(page, "replaced attempt") == []
    conv = (await web.store.conversations.list(ALICE)).items[0]
    msgs = (await web.store.messages.list(ALICE, conv.sid)).items
    assert [(m.role, m.content, bool(m.superseded_by)) for m in msgs] == [
        ("user", "first question", False),
        ("assistant", "echo: first question", False),
        ("user", "tell me a joke", False),
        ("assistant", "echo: tell me a joke", True),
        ("assistant", "A better joke.", False),
    ]
    # what the model got for the regenerate: the user's message last, not the replaced answer
    sent = [r for r in fake.requests if r.get("messages")][-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent if m["role"] != "system"][-1] == (
        "user",
        "tell me a joke",
    )
    assert "echo: tell me a joke" not in json.dumps(sent)
    await expect(page.get_by_role("button", name="Regenerate the last reply")).to_have_count(1)
    await page.context.close()


async def test_edit_and_resend_the_last_message(browser: Browser, web: Web, fake: FakeOpenAI) -> None:
    page = await open_page(browser, web)
    await send_message(page, "what is 2+2")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: what is 2+2")
    await page.get_by_role("button", name="Edit your last message").click()
    box = page.get_by_label("Edit your message")
    await expect(box).to_be_focused()
    await expect(box).to_have_value("what is 2+2")
    await box.press("Escape")  # cancel: nothing sent, the bubble is back
    await expect(box).to_have_count(0)
    await expect(page.get_by_role("button", name="Edit your last message")).to_be_focused()
    await page.keyboard.press("Enter")
    await page.get_by_label("Edit your message").fill("what is 3+3")
    await page.get_by_role("button", name="Ask again").click()
    await expect(page.locator("#messages > .message.assistant .text").last).to_have_text("echo: what is 3+3")
    await expect(page.locator("#messages > .message.user .text")).to_have_text(["what is 3+3"])
    await expect(page.locator(".superseded-group .message")).to_have_count(2)
    conv = (await web.store.conversations.list(ALICE)).items[0]
    msgs = (await web.store.messages.list(ALICE, conv.sid)).items
    assert [(m.role, m.content, bool(m.superseded_by)) for m in msgs] == [
        ("user", "what is 2+2", True),
        ("assistant", "echo: what is 2+2", True),
        ("user", "what is 3+3", False),
        ("assistant", "echo: what is 3+3", False),
    ]
    sent = [r for r in fake.requests if r.get("messages")][-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent if m["role"] != "system"] == [("user", "what is 3+3")]
    await page.reload()
    await expect(page.locator("#messages > .message.user .text")).to_have_text(["what is 3+3"])
    await expect(page.locator(".superseded-group")).to_have_count(1)
    await page.context.close()


async def test_a_refused_message_stays_in_the_composer(browser: Browser, web: Web) -> None:
    page = await open_page(browser, web)
    too_long = "x" * (web.settings.agent.max_message_chars + 1)
    box = page.get_by_label("Message (Enter sends")
    await box.fill(too_long)
    await box.press("Enter")
    await expect(page.locator("#status")).to_contain_text("Not sent")
    await expect(box).to_have_value(too_long)
    await expect(page.locator(".message")).to_have_count(0)  # no bubble for a message never stored
    assert (await web.store.conversations.list(ALICE)).items == []
    await page.context.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_daemon_down_then_back(browser: Browser, tmp_path: Path, fake: FakeOpenAI) -> None:
    settings = with_web(web_settings(tmp_path, fake.base_url), port=_free_port())
    async with serve_web(settings) as web:
        page = await open_page(browser, web)
        await send_message(page, "first")
        await expect(page.locator(".message.assistant .text").last).to_have_text("echo: first")
    # the daemon is gone: sending says so, keeps the text, and the banner stays up
    box = page.get_by_label("Message (Enter sends")
    await box.fill("while it is down")
    await box.press("Enter")
    banner = page.get_by_role("alert").filter(has_text="not reachable")
    await expect(banner).to_be_visible()
    await expect(page.locator("#status")).to_contain_text("The server is not reachable.")
    await expect(box).to_have_value("while it is down")
    # back on the same address: the page notices by itself and sends again without a reload
    async with serve_web(settings) as web:
        await expect(banner).to_be_hidden()
        await expect(page.locator(".message.user .text")).to_have_text(["first"])
        await box.press("Enter")
        await expect(page.locator(".message.assistant .text").last).to_have_text("echo: while it is down")
        await page.context.close()


async def test_a_history_fetched_before_a_turn_does_not_wipe_its_reply(browser: Browser, web: Web) -> None:
    """The page reloads a conversation's history (a click in the list, a reconnect) while the user
    sends: the history answered before the turn was stored lacks it, so it is not drawn over it."""
    page = await open_page(browser, web)
    await send_message(page, "first")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: first")

    held: list[APIResponse] = []
    release = anyio.Event()

    async def hold(route: Route) -> None:
        held.append(await route.fetch())  # the server answers now, before the second turn
        await release.wait()
        await route.fulfill(response=held[-1])

    await page.route(re.compile(r"/api/conversations/[^/]+/messages"), hold)
    loads = int(await page.locator("body").get_attribute("data-loads") or "0")
    await page.locator("#conversation-list .conversation-title").first.click()
    await until(lambda: held, what="the history request reaching the server")

    await send_message(page, "second")
    await expect(page.locator(".message.assistant .text").last).to_have_text("echo: second")
    release.set()
    await expect(page.locator("body")).to_have_attribute("data-loads", str(loads + 1))
    await expect(page.locator(".message.user .text")).to_have_text(["first", "second"])
    await expect(page.locator(".message.assistant .text")).to_have_text(["echo: first", "echo: second"])
    await page.context.close()
