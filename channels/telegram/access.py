"""Who the bot answers, and the one polite refusal (with a pairing code) for everyone else.

``[telegram] allowed_users`` and ``[users.<name>]`` ids are answered from the config alone. Every other
sender is looked up in the store's identity links on each message (:mod:`agent.pairing`), so an
approval (``hero-agent pair approve CODE``, from any process) or an unlink takes effect with the next
message. A stranger's private message is answered with their Telegram id and a pairing code; in a group
only once per process lifetime, with their id and a pointer to a private chat (a code is personal, and
a group should not hear it repeated). Attempts are rate-limited per Telegram id: beyond
``pairing_attempts_per_hour`` nothing is answered.
"""

from __future__ import annotations

import time

import structlog

from agent.pairing import Pairing
from channels.telegram.identity import Identity, Incoming
from config.settings import TelegramSettings

log = structlog.get_logger("channels.telegram")

NOT_ALLOWED = (
    "Sorry, this is a private assistant and I am not allowed to talk with you. "
    "Your Telegram id is {id}: ask the owner to add it to the allowed users."
)
PAIRING = (
    "Hello{name}! This is a private assistant, and I do not know you yet.\n\n"
    "Your Telegram id: {id}\n"
    "Pairing code: {code} (valid for {minutes} minutes)\n\n"
    "Ask the owner to approve it with: hero-agent pair approve {code}"
)
MAX_REFUSED_REMEMBERED = 10_000
GROUP = (
    "Sorry, this is a private assistant and I do not know you yet (your Telegram id: {id}). "
    "Write to me in a private chat to get a pairing code."
)


class Gate:
    """Decides whether an update from a sender the config does not know is answered."""

    def __init__(self, cfg: TelegramSettings, identity: Identity, pairing: Pairing) -> None:
        self._cfg = cfg
        self._identity = identity
        self._pairing = pairing
        #: senders already refused in a group (answered there once per process lifetime)
        self._refused_in_groups: set[int] = set()

    async def admit(self, incoming: Incoming) -> bool:
        """True when the sender is linked (read from the store now, and remembered for this update)."""
        user = await self._pairing.linked_user(incoming.sender_id)
        self._identity.remember(incoming.sender_id, user)
        return user is not None

    async def refusal(self, incoming: Incoming) -> str | None:
        """The refusal to send, or None when this sender's attempts of the hour are used up."""
        sender = incoming.sender_id
        if incoming.is_group:
            if not self._pairing.attempt(sender) or sender in self._refused_in_groups:
                return None
            if len(self._refused_in_groups) >= MAX_REFUSED_REMEMBERED:
                self._refused_in_groups.clear()
            self._refused_in_groups.add(sender)
            return (GROUP if self._cfg.pairing else NOT_ALLOWED).format(id=sender)
        if not self._cfg.pairing:
            return NOT_ALLOWED.format(id=sender) if self._pairing.attempt(sender) else None
        code = await self._pairing.request(sender, incoming.sender_name, incoming.sender_username)
        if code is None:
            return None
        minutes = max(1, round((code.expires_at - time.time() * 1000) / 60_000))
        name = f" {incoming.sender_name}" if incoming.sender_name else ""
        log.info("telegram.pairing_code", telegram_id=sender, code=code.code)
        return PAIRING.format(name=name, id=sender, code=code.code, minutes=minutes)
