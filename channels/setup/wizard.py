"""``hero-agent init``: the choices, asked (prompt_toolkit) or given as flags, applied to a
:class:`~config.writer.ConfigEdit` and checked against the real servers before anything is written.

Interactive steps: provider (OpenAI, Anthropic, or any OpenAI-compatible server such as Ollama), its
URL, the key (typed hidden; a refused key is asked again), the model (the server's list completes it),
a test call, Telegram (token checked with ``getMe``), a token for the web page, then the file is written
after a confirmation. Every question's default is the current value, so a re-run that only presses
Enter changes nothing. With ``--non-interactive`` the same steps take the flags instead, and a failed
check stops with one line and writes nothing.
"""

from __future__ import annotations

import getpass
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import WordCompleter

from channels.setup.probes import Finding, probe_bot, probe_provider, trial_call
from config.settings import LLMSettings, TelegramSettings

if TYPE_CHECKING:
    from config.writer import ConfigEdit

OPENAI_URL = "https://api.openai.com/v1"
ANTHROPIC_URL = "https://api.anthropic.com"
LOCAL_URL = "http://127.0.0.1:11434/v1"  # Ollama's OpenAI-compatible endpoint
PROVIDERS = {
    "openai": "OpenAI (api.openai.com)",
    "anthropic": "Anthropic (api.anthropic.com)",
    "compatible": "another OpenAI-compatible server: Ollama, LM Studio, vLLM, llama.cpp, a gateway...",
}
KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "compatible": "OPENAI_API_KEY"}
DEFAULT_MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "compatible": ""}
PAIR_HINT = (
    "To talk to the bot, send it /start from Telegram: it answers with a pairing code; approve it here "
    "with `hero-agent pair approve CODE` (see docs/telegram.md)."
)


class InitFailed(Exception):
    """A check failed in non-interactive mode: one line, nothing written."""


@dataclass
class Choices:
    """What ``init`` will write (secrets included: they come from stdin or the environment)."""

    provider: str = "openai"  # a key of PROVIDERS
    base_url: str = OPENAI_URL
    api_key: str | None = None  # None: leave the file's key (or the environment's) as it is
    model: str = ""
    telegram_token: str | None = None
    web_token_user: str | None = None
    #: asked at the prompt: the write of an existing file is confirmed first
    interactive: bool = False


def current_provider(edit: ConfigEdit) -> str:
    if edit.get("llm", "provider") == "anthropic":
        return "anthropic"
    url = edit.get("llm", "base_url")
    return "openai" if url in (None, OPENAI_URL) else "compatible"


def llm_settings(choices: Choices, file_key: str, env_key: str) -> LLMSettings:
    """The provider settings to probe with, as the daemon would build them."""
    provider = "anthropic" if choices.provider == "anthropic" else "openai"
    key = choices.api_key if choices.api_key is not None else (file_key or env_key)
    return LLMSettings(provider=provider, base_url=choices.base_url, api_key=key, model=choices.model)


def apply(choices: Choices, edit: ConfigEdit) -> None:
    """Put the choices into the document; keys not chosen stay exactly as they were."""
    edit.set("llm", "provider", "anthropic" if choices.provider == "anthropic" else "openai")
    edit.set("llm", "base_url", choices.base_url)
    if choices.api_key is not None:
        edit.set("llm", "api_key", choices.api_key)
    if choices.model:
        edit.set("llm", "model", choices.model)
    if choices.telegram_token is not None:
        edit.set("telegram", "enabled", True)
        edit.set("telegram", "token", choices.telegram_token)
    if choices.web_token_user:
        tokens = dict(edit.get("web", "tokens", {}) or {})
        tokens[secrets.token_urlsafe(24)] = choices.web_token_user
        edit.set("web", "tokens", tokens)


def new_web_token(edit: ConfigEdit, user: str) -> str:
    """The token :func:`apply` added for ``user`` (to show it once)."""
    tokens = edit.get("web", "tokens", {}) or {}
    return str(next(tok for tok, who in reversed(list(tokens.items())) if who == user))


# -- non-interactive ---------------------------------------------------------------------------------


async def check_choices(choices: Choices, file_key: str, env_key: str, tg: TelegramSettings) -> list[str]:
    """The flag-driven checks: lines to print; InitFailed on the first failure."""
    llm = llm_settings(choices, file_key, env_key)
    report = await probe_provider(llm)
    for finding in (report.reachable, report.key):
        if finding is not None and not finding.ok:
            raise InitFailed(f"{finding.detail} (fix: {finding.fix})")
    if not choices.model:
        choices.model = (report.models or [""])[0] or DEFAULT_MODELS[choices.provider]
        llm = llm_settings(choices, file_key, env_key)
    lines = [f"provider: {report.reachable.detail if report.reachable else llm.base_url}"]
    trial = await trial_call(llm)
    if not trial.ok:
        raise InitFailed(f"test call failed: {trial.detail} (fix: {trial.fix})")
    lines.append(f"test call: {trial.detail}")
    if choices.telegram_token is not None:
        bot = await probe_bot(tg, choices.telegram_token)
        if not bot.ok:
            raise InitFailed(f"telegram: {bot.detail} (fix: {bot.fix})")
        lines += [f"telegram: {bot.detail}", PAIR_HINT]
    return lines


# -- interactive -------------------------------------------------------------------------------------


class Asker:
    """The questions, on one prompt_toolkit session (tests drive it through a real terminal)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.session: PromptSession[str] = PromptSession()
        self.say = say

    async def text(self, question: str, default: str = "", *, words: list[str] | None = None) -> str:
        completer = WordCompleter(words, sentence=True) if words else None
        answer = await self.session.prompt_async(
            f"{question}: ", default=default, completer=completer, complete_while_typing=bool(words)
        )
        return answer.strip()

    async def secret(self, question: str) -> str:
        return (await self.session.prompt_async(f"{question}: ", is_password=True)).strip()

    async def yes(self, question: str, default: bool) -> bool:
        hint = "Y/n" if default else "y/N"
        while True:
            answer = (await self.session.prompt_async(f"{question} [{hint}] ")).strip().lower()
            if not answer:
                return default
            if answer in ("y", "yes", "n", "no"):
                return answer.startswith("y")
            self.say("please answer y or n")

    async def choose(self, question: str, options: dict[str, str], default: str) -> str:
        keys = list(options)
        for i, key in enumerate(keys, 1):
            self.say(f"  {i}. {options[key]}")
        while True:
            answer = await self.text(question, str(keys.index(default) + 1))
            if answer.isdigit() and 1 <= int(answer) <= len(keys):
                return keys[int(answer) - 1]
            self.say(f"please answer a number from 1 to {len(keys)}")


async def interview(ask: Asker, edit: ConfigEdit, env_keys: dict[str, str], tg: TelegramSettings) -> Choices:
    """Ask every step; each default is the current value."""
    say = ask.say
    choices = Choices(provider=current_provider(edit))
    choices.provider = await ask.choose("Provider", PROVIDERS, choices.provider)
    if choices.provider == "compatible":
        current = edit.get("llm", "base_url")
        default = current if current and current not in (OPENAI_URL, ANTHROPIC_URL) else LOCAL_URL
        choices.base_url = await ask.text("Server URL (ends in /v1)", default)
    else:
        choices.base_url = OPENAI_URL if choices.provider == "openai" else ANTHROPIC_URL
    report = await _ask_key(ask, choices, edit, env_keys)
    models = report or []
    current_model = edit.get("llm", "model") or ""
    default_model = current_model if current_model in models or not models else models[0]
    if not default_model:
        default_model = DEFAULT_MODELS[choices.provider]
    if models:
        more = " ..." if len(models) > 12 else ""
        say(f"the server offers {len(models)} models: {', '.join(models[:12])}{more}")
    choices.model = await ask.text("Model (Tab completes)", default_model, words=models)
    trial = await trial_call(_probe_settings(choices, edit, env_keys))
    say(("ok: " if trial.ok else "the test call failed: ") + trial.detail)
    if not trial.ok:
        say(f"fix: {trial.fix}")
        if not await ask.yes("Write the configuration anyway?", False):
            raise InitFailed("nothing written")
    await _ask_telegram(ask, choices, edit, tg)
    if await ask.yes("Protect the web page with a token (needed to serve other machines)?", False):
        choices.web_token_user = await ask.text("User the token signs in as", _os_user())
    return choices


def _probe_settings(choices: Choices, edit: ConfigEdit, env_keys: dict[str, str]) -> LLMSettings:
    file_key = str(edit.get("llm", "api_key") or "")
    return llm_settings(choices, file_key, env_keys.get(KEY_VARS[choices.provider], ""))


async def _ask_key(
    ask: Asker, choices: Choices, edit: ConfigEdit, env_keys: dict[str, str]
) -> list[str] | None:
    """The key, asked until the server accepts it (or the server is unreachable and the user goes
    on); the server's model list."""
    var = KEY_VARS[choices.provider]
    have_file_key = bool(edit.get("llm", "api_key"))
    keep = "the current key" if have_file_key else (f"${var}" if env_keys.get(var) else "")
    optional = choices.provider == "compatible"
    while True:
        hint = f"Enter keeps {keep}" if keep else ("Enter for none" if optional else "")
        typed = await ask.secret(f"API key{f' ({hint})' if hint else ''}")
        if typed:
            choices.api_key = typed
        elif not keep and not optional:
            ask.say("a key is needed for this provider")
            continue
        report = await probe_provider(_probe_settings(choices, edit, env_keys))
        problem: Finding | None = next(
            (f for f in (report.reachable, report.key) if f is not None and not f.ok), None
        )
        if problem is None:
            ask.say(f"ok: {report.reachable.detail if report.reachable else choices.base_url}, key accepted")
            return report.models
        ask.say(f"{problem.detail}")
        if report.key is not None and not report.key.ok:
            choices.api_key = None
            continue  # a refused key: ask it again
        ask.say(f"fix: {problem.fix}")
        if not await ask.yes("Go on without checking the server?", False):
            raise InitFailed("nothing written")
        return None


async def _ask_telegram(ask: Asker, choices: Choices, edit: ConfigEdit, tg: TelegramSettings) -> None:
    configured = bool(edit.get("telegram", "token"))
    question = "Change the Telegram bot token?" if configured else "Set up a Telegram bot?"
    if not await ask.yes(question, False):
        return
    while True:
        token = await ask.secret("Bot token from @BotFather")
        if not token:
            return
        found = await probe_bot(tg, token)
        if found.ok:
            ask.say(f"ok: the bot is {found.detail}")
            ask.say(PAIR_HINT)
            choices.telegram_token = token
            return
        ask.say(f"{found.detail} (fix: {found.fix})")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"


__all__ = ["Asker", "Choices", "InitFailed", "apply", "check_choices", "interview"]
