"""``hero-agent chat`` in-process: prompt_toolkit pipe input, real agent, embedded store, FakeOpenAI."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory
from prompt_toolkit.input import create_pipe_input

from agent.factory import open_agent
from channels.terminal.completion import SLASH_COMMANDS, SlashCompleter
from channels.terminal.session import HELP_KEYS, STOP_HINT, CliChat
from store import InvalidInput, NotFound, Scope, open_store
from tests.channels.terminal.conftest import Runtime, Terminal, make_settings
from tests.fakes.openai_server import FakeOpenAI, reply_error, reply_text, reply_tool_calls
from tests.waiting import until

pytestmark = pytest.mark.anyio


async def run_chat(chat: CliChat) -> None:
    with anyio.fail_after(20):
        await chat.start()
        await chat.run()


async def messages(runtime: Runtime, scope: Scope, conversation_id: str) -> list[tuple[str, str, str, str]]:
    page = await runtime.agent.store.messages.list(scope, conversation_id)
    return [(m.role, m.content, m.channel, m.status) for m in page.items]


async def test_streams_a_reply_and_persists_it_tagged_cli(runtime: Runtime, terminal: Terminal) -> None:
    runtime.fake.enqueue(reply_text("Hello **there**, friend", chunks=5))
    terminal.pipe.send_text("hi agent\r")
    terminal.pipe.send_text("\x04")  # Ctrl-D on the empty prompt after the reply: exit
    chat = terminal.chat(runtime)
    await run_chat(chat)
    assert "Hello there, friend\n" in terminal.text  # markdown markers hidden
    scope = Scope("default", "alice")
    assert await messages(runtime, scope, chat.conversation_id) == [
        ("user", "hi agent", "cli", "complete"),
        ("assistant", "Hello **there**, friend", "cli", "complete"),
    ]


async def test_multiline_input_and_ctrl_c_clears_the_line(runtime: Runtime, terminal: Terminal) -> None:
    # Esc+Enter (Alt-Enter) inserts a newline; Ctrl-C drops the typed line; Enter sends
    terminal.pipe.send_text("dropped text\x03")
    terminal.pipe.send_text("line one\x1b\rline two\r")
    terminal.pipe.send_text("\x04")
    await run_chat(terminal.chat(runtime))
    user_texts = [runtime.fake.last_user_text(body) for body in runtime.fake.requests]
    assert user_texts == ["line one\nline two"]
    assert "echo: line one\nline two" in terminal.text


async def test_resumes_the_active_conversation_new_and_switch(runtime: Runtime, terminal: Terminal) -> None:
    first = terminal.chat(runtime)
    await first.start()
    await first.send("first message")
    assert first.conversation_id
    resumed = terminal.chat(runtime)
    await resumed.start()
    assert resumed.conversation_id == first.conversation_id
    fresh = terminal.chat(runtime)
    await fresh.start(new=True)
    assert fresh.conversation_id not in ("", first.conversation_id)
    switched = terminal.chat(runtime)
    await switched.start(conversation_id=first.conversation_id)
    assert switched.conversation_id == first.conversation_id
    with pytest.raises(NotFound):
        await terminal.chat(runtime).start(conversation_id="zzzz9")
    with pytest.raises(NotFound):  # another user's id is as unknown as a missing one
        await terminal.chat(runtime, user="mallory").start(conversation_id=first.conversation_id)
    with pytest.raises(InvalidInput):
        await terminal.chat(runtime).start(conversation_id="Not An Id")


async def test_slash_commands_clear_help_stop_and_context(runtime: Runtime, terminal: Terminal) -> None:
    chat = terminal.chat(runtime)
    await chat.start()
    await chat.send("remember the blue door")
    printer = await chat.send("/clear")
    assert printer.command is not None and printer.command.command == "clear" and not printer.failed
    await chat.send("/help")
    assert "/switch ID" in terminal.text and HELP_KEYS in terminal.text
    await chat.send("/stop")
    assert STOP_HINT in terminal.text
    bad = await chat.send("/bogus")
    assert bad.failed and "Unknown command /bogus" in terminal.text
    await chat.send("/context work")
    assert chat.scope == Scope("work", "alice")
    await chat.send("in the work context")
    stored = await messages(runtime, Scope("work", "alice"), chat.conversation_id)
    assert [m[1] for m in stored] == ["in the work context", "echo: in the work context"]
    # /clear happened: the model saw only the new turn in the default context afterwards
    await chat.send("/context default")
    await chat.send("after clear")
    last = runtime.fake.requests[-1]["messages"]
    assert [m["content"] for m in last if m["role"] == "user"] == ["after clear"]


async def test_tool_activity_is_shown_compactly(runtime: Runtime, terminal: Terminal) -> None:
    runtime.fake.enqueue(
        reply_tool_calls([("call_1", "current_datetime", "{}")]),
        reply_text("It is now.", chunks=2),
    )
    chat = terminal.chat(runtime)
    await chat.start()
    await chat.send("what time is it?")
    assert "  ⚙ current_datetime …\n" in terminal.text
    assert "  ✓ current_datetime (" in terminal.text
    assert terminal.text.rstrip().endswith("It is now.")


async def test_ctrl_c_mid_reply_cancels_the_turn_and_the_next_turn_works(
    runtime: Runtime, terminal: Terminal
) -> None:
    words = " ".join(f"word{i}" for i in range(200))
    runtime.fake.enqueue(reply_text(words, chunks=200, chunk_delay=0.02))
    chat = terminal.chat(runtime)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_chat, chat)
            terminal.pipe.send_text("tell me a long story\r")
            await terminal.wait_for(r"word5 ")
            os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends on Ctrl-C
            await terminal.wait_for("⏹ interrupted")
            terminal.pipe.send_text("and now?\r")
            await terminal.wait_for("echo: and now\\?")
            terminal.pipe.send_text("\x04")
    assert "word199" not in terminal.text
    stored = await messages(runtime, Scope("default", "alice"), chat.conversation_id)
    assert [(role, status) for role, _text, _ch, status in stored] == [
        ("user", "complete"),
        ("assistant", "interrupted"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert stored[1][1].startswith("word0 word1")
    # the interrupted reply is sent to the model as history, with no dangling tool call
    history = runtime.fake.requests[-1]["messages"]
    assert [m["role"] for m in history if m["role"] != "system"] == ["user", "assistant", "user"]


async def test_input_history_is_persisted(runtime: Runtime, terminal: Terminal) -> None:
    path = runtime.settings.store.path / "cli_history"
    terminal.pipe.send_text("a remembered line\r\x04")
    await run_chat(terminal.chat(runtime, history=FileHistory(str(path))))
    assert "+a remembered line" in path.read_text()
    assert list(FileHistory(str(path)).load_history_strings()) == ["a remembered line"]


async def test_tab_completes_slash_commands(runtime: Runtime, terminal: Terminal) -> None:
    chat = terminal.chat(runtime)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_chat, chat)
            terminal.pipe.send_text("/hel")
            # the menu opens while typing (as a person sees it), then Tab picks the entry
            buffer = chat.session.default_buffer
            await until(lambda: buffer.complete_state is not None, what="the completion menu")
            terminal.pipe.send_text("\t")
            await until(lambda: buffer.text == "/help", what="the completed command")
            terminal.pipe.send_text("\r\x04")
    assert "/help" in terminal.text and HELP_KEYS in terminal.text
    assert runtime.fake.requests == []  # commands never reach the model


def test_completer_lists_the_shared_commands() -> None:
    names = [c.text for c in SlashCompleter().get_completions(Document("/c"), CompleteEvent())]
    assert names == ["/clear", "/context", "/compact"]
    assert [c.text for c in SlashCompleter().get_completions(Document("hello /c"), CompleteEvent())] == []
    assert {
        "/new",
        "/clear",
        "/list",
        "/switch",
        "/rename",
        "/delete",
        "/context",
        "/memory",
        "/forget",
    } <= set(SLASH_COMMANDS)
    assert {"/compact", "/stop", "/help", "/exit"} <= set(SLASH_COMMANDS)


async def test_provider_failure_is_one_clear_line_and_chat_goes_on(
    runtime: Runtime, terminal: Terminal
) -> None:
    runtime.fake.enqueue(reply_error(500))
    chat = terminal.chat(runtime)
    await chat.start()
    printer = await chat.send("hello?")
    assert printer.failed
    assert "✗ " in terminal.text
    ok = await chat.send("again")
    assert not ok.failed and "echo: again" in terminal.text


def visible(raw: str) -> str:
    """What a terminal shows of ``raw``: on each line, a carriage return plus erase-line wipes what
    came before it (the waiting line draws and erases itself that way)."""
    return "\n".join(line.rsplit("\r\x1b[K", 1)[-1] for line in raw.split("\n"))


async def test_a_waiting_line_shows_retries_and_is_erased_by_the_reply(
    tmp_path: Path, terminal: Terminal
) -> None:
    async with FakeOpenAI() as fake:
        settings = make_settings(
            tmp_path,
            fake.base_url,
            HERO_AGENT_LLM__MAX_RETRIES="2",
            HERO_AGENT_LLM__RETRY_BASE_DELAY_S="0.01",
        )
        fake.enqueue(reply_error(503), reply_text("recovered", chunks=2))
        async with open_store(settings) as store, open_agent(settings, store) as agent:
            chat = terminal.chat(Runtime(fake, settings, agent))
            await chat.start()
            printer = await chat.send("are you there?")
    assert not printer.failed
    raw = terminal.text
    assert "waiting for fake-model" in raw and "retrying (1/2) · " in raw
    assert raw.index("waiting for fake-model") < raw.index("retrying (1/2)") < raw.index("recovered")
    shown = visible(raw)
    assert "recovered\n" in shown and "retrying" not in shown and "waiting for" not in shown


async def test_a_failed_tools_reason_is_shown_whole_and_wrapped(runtime: Runtime, terminal: Terminal) -> None:
    runtime.fake.enqueue(reply_tool_calls([("c1", "no_such_tool", "{}")]), reply_text("Sorry.", chunks=1))
    chat = terminal.chat(runtime)
    await chat.start()
    await chat.send("use a tool")
    shown = visible(terminal.text)
    reason = " ".join(runtime.fake.requests[1]["messages"][-1]["content"].split())  # what the model read
    assert reason.startswith("error: unknown tool") and len(reason) > 80
    start = shown.index("  ✗ no_such_tool failed (")
    block = shown[start:].split("\n")[1:]
    wrapped = [line for line in block[: block.index("Sorry.")] if line.strip()]
    assert len(wrapped) > 1 and all(line.startswith("    ") and len(line) < 80 for line in wrapped)
    assert " ".join(line.strip() for line in wrapped) == reason


async def test_resuming_shows_the_last_exchanges_and_new_does_not(runtime: Runtime, tmp_path: Path) -> None:
    with create_pipe_input() as pipe:
        first = Terminal(pipe)
        chat = first.chat(runtime)
        await chat.start()
        for text in ("one", "two", "three", "four"):
            await chat.send(text)
    with create_pipe_input() as pipe:
        again = Terminal(pipe)
        pipe.send_text("\x04")
        await run_chat(again.chat(runtime))
    shown = visible(again.text)
    recap = shown[shown.index("── earlier in this conversation ──") : shown.rindex("──\n")]
    assert [line for line in recap.splitlines()[1:] if line] == [
        "you > two",
        "echo: two",
        "you > three",
        "echo: three",
        "you > four",
        "echo: four",
    ]
    with create_pipe_input() as pipe:
        fresh = Terminal(pipe)
        pipe.send_text("\x04")
        chat = fresh.chat(runtime)
        with anyio.fail_after(20):
            await chat.start(new=True)
            await chat.run()
    assert "earlier in this conversation" not in fresh.text
