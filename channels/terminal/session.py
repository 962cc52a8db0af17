"""The interactive terminal chat (``hero-agent chat``).

Keys: Enter sends, Alt-Enter (Esc then Enter) inserts a newline, Tab completes slash commands,
Up/Down walk the history (a file under the data dir), Ctrl-C at the prompt clears the line, Ctrl-C
during a reply cancels that turn, Ctrl-D on an empty line exits. The bottom toolbar shows the context,
the user and the conversation. Resuming a conversation shows its last few exchanges first; while the
model has not answered yet a waiting line shows "waiting for <model>" or "retrying (n/max)".

Ctrl-C during a reply: no prompt is active then, so the terminal is in cooked mode and Ctrl-C is a
SIGINT; a signal receiver cancels the task group iterating ``agent.handle`` and the agent stores the
partial reply as interrupted. At the prompt, prompt_toolkit reads Ctrl-C as a key instead.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import anyio
from anyio.abc import TaskStatus
from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output

from agent.core import TurnRequest
from agent.events import TurnFailed
from channels.base import Channel
from channels.terminal.completion import SlashCompleter
from channels.terminal.printer import STYLE, ReplyPrinter, Screen, closing_events
from channels.terminal.recap import last_exchanges, show_recap
from config import HeroError
from store import Scope, StoreError

if TYPE_CHECKING:
    from agent.core import Agent
    from config import Settings

CHANNEL = "cli"
EXIT_COMMANDS = ("/exit", "/quit")
HELP_KEYS = (
    "Keys: Enter sends · Alt-Enter (Esc Enter) new line · Tab completes · "
    "Ctrl-C cancels a reply or clears the line · Ctrl-D exits"
)
TICK_S = 0.2
#: user/assistant exchanges shown when a chat resumes a conversation
RESUME_TURNS = 3
#: lines of one message shown when resuming (the rest is elided)
RESUME_LINES = 8
STOP_HINT = "Nothing is running. To stop a reply while it streams, press Ctrl-C."


def history_path(settings: Settings) -> Path:
    """The persistent input history: ``<store.path>/cli_history``."""
    return settings.store.path / "cli_history"


async def _animate(printer: ReplyPrinter) -> None:
    """Keep the waiting line alive (its spinner and seconds) until the send's task group ends."""
    while True:
        await anyio.sleep(TICK_S)
        printer.tick()


def _key_bindings() -> KeyBindings:
    kb = KeyBindings()

    @kb.add("enter")
    def _send(event: KeyPressEvent) -> None:
        event.current_buffer.validate_and_handle()

    @kb.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    return kb


class CliChat(Channel):
    """The terminal channel: a prompt loop over the agent for one (context, user)."""

    name: ClassVar[str] = CHANNEL

    def __init__(
        self,
        settings: Settings,
        agent: Agent,
        *,
        user: str,
        context: str,
        input: Input | None = None,
        output: Output | None = None,
        reply_output: Output | None = None,
        history: History | None = None,
    ) -> None:
        super().__init__(settings, agent)
        self.scope = Scope(context, user)
        self.conversation_id = ""
        self.title = ""
        self._cancel_scope: anyio.CancelScope | None = None
        self._resumed = False
        self._interrupted = False
        self.session: PromptSession[str] = PromptSession(
            input=input,
            output=output,
            history=history if history is not None else InMemoryHistory(),
            completer=SlashCompleter(),
            complete_while_typing=True,
            multiline=True,
            key_bindings=_key_bindings(),
            bottom_toolbar=self._toolbar,
            style=STYLE,
            prompt_continuation="… ",
        )
        self.screen = Screen(reply_output or self.session.output)

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self, *, conversation_id: str | None = None, new: bool = False) -> None:
        """Pick the conversation: ``conversation_id`` (switch), ``new``, else resume the active one."""
        if conversation_id:
            await self.agent.conversations.set_active(self.scope, conversation_id)
        elif new:
            await self.agent.conversations.new(self.scope, channel=CHANNEL)
        await self._refresh()
        self._resumed = not new and bool(self.conversation_id)

    async def _recap(self) -> None:
        """The last few exchanges of the conversation being resumed (a store failure skips it)."""
        try:
            page = await self.agent.store.messages.list(
                self.scope,
                self.conversation_id,
                limit=RESUME_TURNS * 8,
                include_archived=False,
                descending=True,
            )
        except StoreError as exc:
            if not exc.user_safe:
                raise
            return
        show_recap(self.screen, last_exchanges(page.items, RESUME_TURNS), RESUME_LINES)

    async def stop(self) -> None:
        self.cancel_turn()

    def cancel_turn(self) -> bool:
        """Cancel the running reply, if any (what Ctrl-C does)."""
        if self._cancel_scope is None:
            return False
        self._interrupted = True
        self._cancel_scope.cancel()
        return True

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Prompt, send, render, until Ctrl-D (or ``/exit``)."""
        self.screen.line(
            "class:info", f"hero-agent chat · {self._where()} · /help for commands, Ctrl-D to exit"
        )
        if self._resumed:
            await self._recap()
        while True:
            try:
                text = await self.session.prompt_async(self._prompt_message)
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt: drop the line
            except EOFError:
                return
            text = text.strip()
            if not text:
                continue
            if text in EXIT_COMMANDS:
                return
            await self.send(text)

    async def send(self, text: str) -> ReplyPrinter:
        """One message or command through the agent, rendered as it streams."""
        printer = ReplyPrinter(self.screen, model=self.settings.llm.model)
        if text.split(maxsplit=1)[0] == "/stop":
            self.screen.line("class:info", STOP_HINT)
            return printer
        request = TurnRequest(scope=self.scope, channel=CHANNEL, text=text)
        self._interrupted = False
        async with anyio.create_task_group() as tg:
            await tg.start(self._cancel_on_sigint)
            tg.start_soon(_animate, printer)
            self._cancel_scope = tg.cancel_scope
            try:
                async with closing_events(self.agent.handle(request)) as events:
                    async for event in events:
                        printer.handle(event)
            except HeroError as exc:
                # a command hit a store/agent error: show it and keep the chat going
                if not exc.user_safe:
                    raise
                printer.handle(TurnFailed.of(exc))
            finally:
                self._cancel_scope = None
            tg.cancel_scope.cancel()  # stop the signal watcher
        if self._interrupted:
            printer.interrupted()
        await self._after(printer)
        return printer

    async def _cancel_on_sigint(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()
            async for _ in signals:
                self.cancel_turn()
                return

    async def _after(self, printer: ReplyPrinter) -> None:
        command = printer.command
        if command is not None and command.ok:
            if command.command.lstrip("/") == "help":
                self.screen.line("class:info", HELP_KEYS)
            context = command.data.get("context")
            if isinstance(context, str) and context and context != self.scope.context:
                self.scope = Scope(context, self.scope.user_id)
                self.screen.line("class:info", f"context: {context}")
        try:
            await self._refresh()
        except StoreError as exc:  # the toolbar keeps its last values; the chat goes on
            if not exc.user_safe:
                raise

    async def _refresh(self) -> None:
        """The active conversation for the toolbar (the agent may have changed it: /new, /switch)."""
        conversation = await self.agent.conversations.active(self.scope, channel=CHANNEL, create=False)
        self.conversation_id = conversation.sid if conversation else ""
        self.title = conversation.title if conversation else ""

    # -- display ----------------------------------------------------------------------------------

    def _where(self) -> str:
        conv = (
            f"{self.title} [{self.conversation_id}]"
            if self.title
            else self.conversation_id or "new conversation"
        )
        return f"{self.scope.context} · {self.scope.user_id} · {conv}"

    def _prompt_message(self) -> StyleAndTextTuples:
        return [("class:info", f"{self.scope.context}"), ("", " > ")]

    def _toolbar(self) -> StyleAndTextTuples:
        return [
            ("class:bottom-toolbar", f" {self._where()}  ·  Enter send · Alt-Enter newline · Ctrl-D exit ")
        ]
