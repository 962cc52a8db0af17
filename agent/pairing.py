"""Telegram pairing: a stranger asks with a short code, the owner approves it, the Telegram id is linked.

Who a Telegram id is, in order: a ``[users.<name>]`` section of the config that lists it (never
changed from here: such an id cannot be paired away or unlinked), else a link stored by an approved
pairing (:mod:`store.api.links`: the reserved context ``_system``, global to the deployment), else
nobody (``tg:<id>`` when ``[telegram] allowed_users`` lets them in, otherwise a stranger).

A stranger who writes to the bot gets a code (:meth:`Pairing.request`): the one still pending for
their id, or a new one, valid ``[telegram] pairing_code_ttl_s``. Their attempts are rate-limited per
Telegram id (``pairing_attempts_per_hour``, in memory: a restart forgets the count, not the code).
``hero-agent pair approve CODE`` (or the web page) links the id to a user; ``deny`` drops the code.

Codes are 8 characters of an alphabet without look-alikes (no 0/O, 1/I/L): 31^8 ~ 8.5e11 values,
and they expire, so guessing one is hopeless; approving is an owner's act anyway.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict, deque
from collections.abc import Callable

from agent.errors import AgentError
from agent.metrics import Labels, counter_lines
from config.settings import Settings
from store import MAX_PENDING_CODES, IdentityLink, InvalidInput, PairingCode, Store, validate_user

CHANNEL = "telegram"
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 8
HOUR_S = 3600.0
#: Telegram ids whose attempts are remembered; beyond this the oldest are forgotten
MAX_TRACKED = 10_000


class PairingError(AgentError):
    """A pairing request that cannot be done. User-safe. ``reason``: ``invalid`` (not a code),
    ``not_found`` (no such pending code, or expired; no link), ``config`` (the config links that id)."""

    def __init__(self, message: str, reason: str = "not_found") -> None:
        super().__init__(message)
        self.reason = reason
        self.code = f"pairing_{reason}"


def normalise_code(code: str) -> str:
    """``"abcd-2345 "`` -> ``"ABCD2345"`` (what a person may type back)."""
    return "".join(ch for ch in code.upper() if ch.isascii() and ch.isalnum())


class Pairing:
    """The pairing policy over the store's links and codes; see the module docstring."""

    def __init__(self, settings: Settings, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._store = store
        self._clock = clock
        self._attempts: dict[int, deque[float]] = {}
        #: pairing_attempts, codes_issued, approvals, denials, rate_limited (this process)
        self.counts: dict[str, int] = defaultdict(int)

    # -- who is who ------------------------------------------------------------------------------

    def config_user(self, telegram_id: int) -> str | None:
        """The user a ``[users.<name>]`` section links this id to."""
        return self._settings.user_for_telegram_id(telegram_id)

    async def linked_user(self, telegram_id: int) -> str | None:
        """The user this id is, by the config or by an approved pairing; None for nobody."""
        configured = self.config_user(telegram_id)
        if configured is not None:
            return configured
        link = await self._store.links.get(CHANNEL, str(telegram_id))
        return link.user if link is not None else None

    # -- the stranger's side -------------------------------------------------------------------

    async def request(self, telegram_id: int, name: str = "", username: str = "") -> PairingCode | None:
        """The code to show a stranger (their pending one, else a new one); None when this id asked
        too often in the last hour (then nothing is answered)."""
        if not self.attempt(telegram_id):
            return None
        now = self._now_ms()
        pending = await self.pending()
        for code in pending:
            if code.external_id == str(telegram_id):
                return code
        if len(pending) >= MAX_PENDING_CODES:
            self.counts["rate_limited"] += 1
            return None
        ttl_ms = int(self._settings.telegram.pairing_code_ttl_s * 1000)
        code = PairingCode(
            CHANNEL, _new_code(), str(telegram_id), name[:128], username[:64], now, now + ttl_ms
        )
        await self._store.links.add_pairing_code(code)
        self.counts["codes_issued"] += 1
        return code

    def attempt(self, telegram_id: int) -> bool:
        """Count a stranger's attempt; False when this id has used up its attempts of the hour."""
        self.counts["pairing_attempts"] += 1
        if self._allow(telegram_id):
            return True
        self.counts["rate_limited"] += 1
        return False

    def _allow(self, telegram_id: int) -> bool:
        """A sliding one-hour window of attempts per Telegram id."""
        now = self._clock()
        window = self._attempts.get(telegram_id)
        if window is None:
            if len(self._attempts) >= MAX_TRACKED:
                self._attempts.pop(next(iter(self._attempts)))
            window = self._attempts[telegram_id] = deque()
        while window and window[0] <= now - HOUR_S:
            window.popleft()
        if len(window) >= self._settings.telegram.pairing_attempts_per_hour:
            return False
        window.append(now)
        return True

    # -- the owner's side ------------------------------------------------------------------------

    async def pending(self) -> list[PairingCode]:
        """Codes still valid, oldest first; expired ones are removed on the way."""
        now = self._now_ms()
        valid = []
        for code in await self._store.links.list_pairing_codes(CHANNEL):
            if code.expires_at <= now:
                await self._store.links.take_pairing_code(CHANNEL, code.code)
            else:
                valid.append(code)
        return valid

    async def links(self) -> list[IdentityLink]:
        return await self._store.links.list(CHANNEL)

    async def approve(self, code: str, user: str, *, by: str) -> IdentityLink:
        """Link the code's Telegram id to ``user``; the code is used up."""
        try:
            validate_user(user)
        except InvalidInput as exc:
            raise PairingError(str(exc), "invalid") from None
        taken = await self._take(code)
        telegram_id = int(taken.external_id)
        configured = self.config_user(telegram_id)
        if configured is not None:
            raise PairingError(
                f"Telegram id {telegram_id} is already {configured!r} in the config ([users.{configured}])",
                "config",
            )
        link = IdentityLink(CHANNEL, taken.external_id, user, self._now_ms(), by)
        await self._store.links.set(link)
        self.counts["approvals"] += 1
        return link

    async def deny(self, code: str) -> PairingCode:
        """Drop the code; the stranger stays a stranger (and may ask again later)."""
        taken = await self._take(code)
        self.counts["denials"] += 1
        return taken

    async def unlink(self, telegram_id: int) -> IdentityLink:
        """Remove the stored link of this id (not a ``[users.*]`` one: that is the config's)."""
        configured = self.config_user(telegram_id)
        if configured is not None:
            raise PairingError(
                f"Telegram id {telegram_id} is linked to {configured!r} by the config "
                f"([users.{configured}]): edit the config to change it",
                "config",
            )
        link = await self._store.links.get(CHANNEL, str(telegram_id))
        if link is None or not await self._store.links.delete(CHANNEL, str(telegram_id)):
            raise PairingError(f"Telegram id {telegram_id} is not linked")
        return link

    async def _take(self, code: str) -> PairingCode:
        wanted = normalise_code(code)
        if len(wanted) != CODE_LENGTH:
            raise PairingError(f"{code.strip()!r} is not a pairing code (8 letters and digits)", "invalid")
        taken = await self._store.links.take_pairing_code(CHANNEL, wanted)
        if taken is None or taken.expires_at <= self._now_ms():
            raise PairingError(f"no pending pairing code {wanted} (it may have expired: ask for a new one)")
        return taken

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- metrics -----------------------------------------------------------------------------------

    def render_lines(self) -> list[str]:
        """Prometheus counters of this process (approvals made by ``hero-agent pair`` in another
        process are counted there, not here)."""
        values: dict[Labels, int] = {(("event", name),): self.counts.get(name, 0) for name in _EVENTS}
        return counter_lines(
            "hero_telegram_pairing_total",
            "Telegram pairing events: attempts, codes issued, approvals, denials, rate-limited.",
            values,
        )


_EVENTS = ("pairing_attempts", "codes_issued", "approvals", "denials", "rate_limited")


def _new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
