"""``hero-agent pair list|approve|deny|unlink``: Telegram pairing from the owner's terminal.

A stranger who writes to the bot gets a pairing code (see :mod:`agent.pairing`); ``pair approve CODE``
links their Telegram id to ``--user`` (default: the OS user, the CLI's own default user), in the store:
no config edit, and the running daemon answers them from their next message on.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import anyio

from agent.pairing import Pairing
from store import IdentityLink, PairingCode, open_store

if TYPE_CHECKING:
    from config.settings import Settings

T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pair = subparsers.add_parser(
        "pair",
        help="Telegram pairing: list, approve or deny codes, unlink Telegram ids",
        description="Link a Telegram user who asked the bot for access (their pairing code) to a user.",
    )
    sub = pair.add_subparsers(dest="pair_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="pending pairing codes and linked Telegram ids").set_defaults(
        handler=run_list
    )
    approve = sub.add_parser("approve", help="link the code's Telegram id to a user")
    approve.add_argument("code", metavar="CODE")
    approve.add_argument("--user", metavar="U", help="the user to link to (default: the OS user name)")
    approve.set_defaults(handler=run_approve)
    deny = sub.add_parser("deny", help="drop a pending code")
    deny.add_argument("code", metavar="CODE")
    deny.set_defaults(handler=run_deny)
    unlink = sub.add_parser("unlink", help="remove the link of a Telegram id (a stranger again)")
    unlink.add_argument("telegram_id", metavar="TGID", type=int)
    unlink.set_defaults(handler=run_unlink)


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    codes, links = _run(settings, _list)
    now_ms = int(time.time() * 1000)
    if codes:
        rows = [("CODE", "TELEGRAM ID", "NAME", "USERNAME", "AGE")]
        rows += [
            (
                c.code,
                c.external_id,
                c.name or "-",
                f"@{c.username}" if c.username else "-",
                _age(now_ms - c.issued_at),
            )
            for c in codes
        ]
        _table(rows)
    else:
        print("No pending pairing codes.")
    print()
    if links:
        _table(
            [("TELEGRAM ID", "USER", "LINKED", "BY")]
            + [(x.external_id, x.user, _when(x.linked_at), x.by or "-") for x in links]
        )
    else:
        print("No linked Telegram ids (besides [users.*] in the config).")
    return 0


def run_approve(args: argparse.Namespace, settings: Settings) -> int:
    user = args.user or settings.os_user

    async def approve(pairing: Pairing) -> IdentityLink:
        return await pairing.approve(args.code, user, by=f"cli:{settings.os_user}")

    link = _run(settings, approve)
    print(f"Linked Telegram id {link.external_id} to user {link.user!r}: the bot answers them from now on.")
    return 0


def run_deny(args: argparse.Namespace, settings: Settings) -> int:
    async def deny(pairing: Pairing) -> PairingCode:
        return await pairing.deny(args.code)

    code = _run(settings, deny)
    print(f"Denied pairing code {code.code} of Telegram id {code.external_id}.")
    return 0


def run_unlink(args: argparse.Namespace, settings: Settings) -> int:
    async def unlink(pairing: Pairing) -> IdentityLink:
        return await pairing.unlink(args.telegram_id)

    link = _run(settings, unlink)
    print(f"Unlinked Telegram id {link.external_id} (was {link.user!r}).")
    return 0


async def _list(pairing: Pairing) -> tuple[list[PairingCode], list[IdentityLink]]:
    return await pairing.pending(), await pairing.links()


def _run(settings: Settings, action: Callable[[Pairing], Awaitable[T]]) -> T:
    """``action`` on a Pairing over the configured store. A PairingError or store error reaches
    ``main``, which prints it as one line (exit 1)."""

    async def main() -> T:
        async with open_store(settings) as store:
            return await action(Pairing(settings, store))

    return anyio.run(main)


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _age(ms: int) -> str:
    seconds = max(0, ms // 1000)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000)) if ms else "-"
