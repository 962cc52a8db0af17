"""``hero-agent init``: write (or edit) the configuration file, interactively or from flags.

Secrets never travel as command-line values (they would sit in shell history and ``ps``): a key comes
from ``--api-key-env VAR`` / ``--api-key-stdin``, a bot token from ``--telegram-token-env VAR`` /
``--telegram-token-stdin`` (stdin holds one per line, the API key first), or is typed hidden at the
prompt. See :mod:`channels.setup.wizard` for the steps and :mod:`config.writer` for how the file is
written (round trip, ``.bak``, mode 0600).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import anyio

from channels.terminal.logs import SHOWN_EVENTS, quiet_logging
from config import ConfigError, LoggingSettings
from config.logging import configure_logging
from config.settings import TelegramSettings

if TYPE_CHECKING:
    from channels.setup.wizard import Choices
    from config import Settings
    from config.writer import ConfigEdit

PROG = "hero-agent init"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "init",
        allow_abbrev=False,  # `--api-key VALUE` must be an error, not a prefix of --api-key-env
        help="set up (or edit) the configuration file: provider, key, model, Telegram, web token",
        description="Ask for the provider, key and model (checked against the server), optionally "
        "Telegram and a web token, then write the configuration file (mode 0600, previous version kept "
        "as .bak, comments and other keys kept). --non-interactive takes the answers from flags.",
    )
    parser.add_argument("--non-interactive", action="store_true", help="no questions: use the flags")
    parser.add_argument("--provider", choices=("openai", "anthropic", "compatible"))
    parser.add_argument("--base-url", metavar="URL", help="server URL (for --provider compatible)")
    parser.add_argument("--model", metavar="NAME", help="model (default: the server's first)")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--api-key-env", metavar="VAR", help="take the API key from $VAR")
    key.add_argument("--api-key-stdin", action="store_true", help="read the API key from stdin")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--telegram-token-env", metavar="VAR", help="take the bot token from $VAR")
    token.add_argument("--telegram-token-stdin", action="store_true", help="read the bot token from stdin")
    parser.add_argument("--web-token-user", metavar="USER", help="add a web token signing in as USER")
    parser.set_defaults(handler=run, config_error_handler=run_with_bad_config)


def run(args: argparse.Namespace, settings: Settings) -> int:
    _quiet(args, settings.logging)
    return _init(args, settings.telegram, loaded=True)


def run_with_bad_config(args: argparse.Namespace, error: ConfigError) -> int:
    """The current file does not load: ``init`` is the way to fix it, so it edits it anyway."""
    _quiet(args, LoggingSettings())
    print(f"{PROG}: note: the current configuration does not load ({error})", file=sys.stderr)
    return _init(args, TelegramSettings(), loaded=False)


def _quiet(args: argparse.Namespace, configured: LoggingSettings) -> None:
    """Logs at warning and above, readable (the questions and answers are the output)."""
    logging_settings, hide = quiet_logging(configured, getattr(args, "log_level", None))
    configure_logging(logging_settings, hidden_events=SHOWN_EVENTS if hide else ())


def _init(args: argparse.Namespace, tg: TelegramSettings, *, loaded: bool) -> int:
    from channels.setup.wizard import InitFailed  # noqa: PLC0415 (loads the providers)
    from config.writer import ConfigEdit, config_target  # noqa: PLC0415 (loads tomlkit)

    edit = ConfigEdit(config_target(getattr(args, "config", None)))
    try:
        if args.non_interactive:
            choices = _from_flags(args, edit, tg)
        else:
            if not sys.stdin.isatty():
                print(
                    f"{PROG}: error: no terminal to ask in: pass --non-interactive and flags", file=sys.stderr
                )
                return 2
            choices = anyio.run(_ask, edit, tg)
    except InitFailed as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return _write(args, edit, choices, loaded=loaded)


def _secrets(args: argparse.Namespace) -> tuple[str | None, str | None]:
    from config.writer import secret_from_env  # noqa: PLC0415

    lines = (
        iter(sys.stdin.read().splitlines()) if args.api_key_stdin or args.telegram_token_stdin else iter(())
    )
    key = token = None
    if args.api_key_env:
        key = secret_from_env(args.api_key_env)
    elif args.api_key_stdin:
        key = next(lines, "").strip()
        if not key:
            raise ConfigError("--api-key-stdin", "stdin holds no key")
    if args.telegram_token_env:
        token = secret_from_env(args.telegram_token_env)
    elif args.telegram_token_stdin:
        token = next(lines, "").strip()
        if not token:
            raise ConfigError("--telegram-token-stdin", "stdin holds no token")
    return key, token


def _from_flags(args: argparse.Namespace, edit: ConfigEdit, tg: TelegramSettings) -> Choices:
    from channels.setup.wizard import (  # noqa: PLC0415
        ANTHROPIC_URL,
        KEY_VARS,
        OPENAI_URL,
        Choices,
        check_choices,
        current_provider,
    )
    from config.writer import env_value  # noqa: PLC0415

    key, token = _secrets(args)
    provider = args.provider or current_provider(edit)
    default_url = {"openai": OPENAI_URL, "anthropic": ANTHROPIC_URL}.get(provider)
    base_url = args.base_url or default_url or edit.get("llm", "base_url")
    if not base_url:
        raise ConfigError("--base-url", "is required for --provider compatible")
    choices = Choices(
        provider=provider,
        base_url=base_url,
        api_key=key,
        model=args.model or edit.get("llm", "model") or "",
        telegram_token=token,
        web_token_user=args.web_token_user,
    )
    file_key = str(edit.get("llm", "api_key") or "")
    for line in anyio.run(check_choices, choices, file_key, env_value(KEY_VARS[provider]), tg):
        print(line)
    return choices


async def _ask(edit: ConfigEdit, tg: TelegramSettings) -> Choices:
    from channels.setup.wizard import Asker, interview  # noqa: PLC0415
    from config.writer import env_value  # noqa: PLC0415

    where = (
        f"editing {edit.path} (the previous version will be kept as .bak)"
        if edit.exists
        else (f"creating {edit.path}")
    )
    print(f"hero-agent init: {where}")
    asker = Asker(print)
    env_keys = {var: env_value(var) for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    choices = await interview(asker, edit, env_keys, tg)
    choices.interactive = True
    return choices


def _write(args: argparse.Namespace, edit: ConfigEdit, choices: Choices, *, loaded: bool) -> int:
    from channels.setup.wizard import apply, new_web_token  # noqa: PLC0415

    apply(choices, edit)
    if not edit.changed:
        print(f"no changes: {edit.path} left as it was")
        return 0
    try:
        edit.validate()
    except ConfigError as exc:
        if loaded:  # our change would break a file that loads today: refuse, write nothing
            print(f"{PROG}: error: the result would not load: {exc}; nothing written", file=sys.stderr)
            return 2
        print(f"{PROG}: warning: the file still does not load: {exc}", file=sys.stderr)
    if choices.interactive and edit.exists:
        print(f"changes: {', '.join(edit.changed)}")
        if not anyio.run(_confirm, f"Write them to {edit.path}?"):
            print("nothing written")
            return 1
    backup = edit.write()
    print(f"wrote {edit.path} (mode 0600): {', '.join(edit.changed)}")
    if backup is not None:
        print(f"the previous version is {backup}")
    if choices.web_token_user:
        token = new_web_token(edit, choices.web_token_user)
        print(f"web token for {choices.web_token_user} (shown once; it is in the file): {token}")
    print("next: `hero-agent doctor` checks everything, `hero-agent serve` starts the daemon")
    return 0


async def _confirm(question: str) -> bool:
    from channels.setup.wizard import Asker  # noqa: PLC0415

    return await Asker(print).yes(question, True)
