"""Identity links and pairing codes: deployment-wide records, kept outside every user's context.

A link says "Telegram id 123 is the user ``alice``"; a pairing code is a pending request to make one.
Both are global to the deployment, not to a context, so they live in the reserved context
:data:`~store.models.SYSTEM_CONTEXT` (``_system``) under the user ``identity``, as ``AgentState``
entries (no new kind, so every engine, export/import and the conformance suite carry them as they are):

* ``link.<channel>.<external id>`` -> JSON ``{"user", "linked_at", "by"}``
* ``pair.<channel>.<CODE>`` -> JSON ``{"external_id", "name", "username", "issued_at", "expires_at"}``

The policy (who may pair, expiry, rate limits) is the agent's (:mod:`agent.pairing`); this module only
stores and reads.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import asdict, dataclass

from store.api.state import State
from store.engine import Engine, ListQuery
from store.errors import InvalidInput
from store.models import SYSTEM_CONTEXT, Kind, Scope, StateEntry

#: where links and pairing codes live
IDENTITY_SCOPE = Scope(SYSTEM_CONTEXT, "identity")
#: at most this many pending codes are kept per channel (strangers cannot grow the store without bound)
MAX_PENDING_CODES = 1000


@dataclass(frozen=True, slots=True)
class IdentityLink:
    """``external_id`` on ``channel`` is the canonical user ``user``."""

    channel: str
    external_id: str
    user: str
    linked_at: int
    #: who approved it ("cli:root", "web:alice")
    by: str = ""


@dataclass(frozen=True, slots=True)
class PairingCode:
    """A stranger's pending request to be linked, shown to them as ``code``."""

    channel: str
    code: str
    external_id: str
    name: str
    username: str
    issued_at: int
    expires_at: int


class Links:
    """Links and pairing codes (``store.links``), kept as state entries of ``state``; see the module
    docstring."""

    def __init__(self, engine: Engine, state: State) -> None:
        self.engine = engine
        self.state = state

    async def get(self, channel: str, external_id: str) -> IdentityLink | None:
        raw = await self.state.get(IDENTITY_SCOPE, _link_key(channel, external_id))
        return _link(channel, external_id, raw) if raw is not None else None

    async def set(self, link: IdentityLink) -> None:
        value = json.dumps({"user": link.user, "linked_at": link.linked_at, "by": link.by}, sort_keys=True)
        await self.state.set(IDENTITY_SCOPE, _link_key(link.channel, link.external_id), value)

    async def delete(self, channel: str, external_id: str) -> bool:
        key = _link_key(channel, external_id)
        if await self.state.get(IDENTITY_SCOPE, key) is None:
            return False
        await self.state.delete(IDENTITY_SCOPE, key)
        return True

    async def list(self, channel: str) -> builtins.list[IdentityLink]:
        prefix = f"link.{_word(channel)}."
        return [
            _link(channel, entry.key[len(prefix) :], entry.value) for entry in await self._entries(prefix)
        ]

    async def relink(self, old: str, new: str) -> int:
        """Point every link (of any channel) to user ``old`` at ``new`` instead; how many moved."""
        moved = 0
        for entry in await self._entries("link."):
            data = _json(entry.value)
            if data.get("user") == old:
                data["user"] = new
                await self.state.set(IDENTITY_SCOPE, entry.key, json.dumps(data, sort_keys=True))
                moved += 1
        return moved

    async def add_pairing_code(self, code: PairingCode) -> None:
        fields = asdict(code)
        del fields["channel"], fields["code"]
        await self.state.set(IDENTITY_SCOPE, _code_key(code.channel, code.code), json.dumps(fields))

    async def list_pairing_codes(self, channel: str) -> builtins.list[PairingCode]:
        """Every stored code of ``channel`` (expired ones included: the caller decides), oldest first."""
        prefix = f"pair.{_word(channel)}."
        codes = [_code(channel, e.key[len(prefix) :], e.value) for e in await self._entries(prefix)]
        return sorted(codes, key=lambda c: (c.issued_at, c.code))

    async def take_pairing_code(self, channel: str, code: str) -> PairingCode | None:
        """Remove the code and return it; None when missing (or taken by a concurrent caller)."""
        key = _code_key(channel, code)
        page = await self.engine.list(Kind.STATE, IDENTITY_SCOPE, ListQuery(filters={"key": key}, limit=1))
        if not page.items:
            return None
        entry = StateEntry.from_record(page.items[0])
        if not await self.engine.delete(Kind.STATE, IDENTITY_SCOPE, entry.sid):
            return None
        return _code(channel, code, entry.value)

    async def _entries(self, prefix: str) -> builtins.list[StateEntry]:
        """State entries of the identity scope whose key starts with ``prefix`` (``.`` < ``/``)."""
        out: builtins.list[StateEntry] = []
        cursor: str | None = None
        filters = {"key__gte": prefix, "key__lt": prefix[:-1] + "/"}
        while True:
            page = await self.engine.list(
                Kind.STATE,
                IDENTITY_SCOPE,
                ListQuery(filters=filters, order_by="key", limit=500, cursor=cursor),
            )
            out.extend(StateEntry.from_record(r) for r in page.items)
            cursor = page.next_cursor
            if cursor is None:
                return out


def _word(value: str) -> str:
    if not value or not value.replace("-", "").replace("_", "").isalnum() or not value.isascii():
        raise InvalidInput(f"invalid identity key part {value!r}")
    return value


def _link_key(channel: str, external_id: str) -> str:
    return f"link.{_word(channel)}.{_word(external_id)}"


def _code_key(channel: str, code: str) -> str:
    return f"pair.{_word(channel)}.{_word(code)}"


def _link(channel: str, external_id: str, raw: str) -> IdentityLink:
    data = _json(raw)
    return IdentityLink(
        channel, external_id, str(data.get("user", "")), _int(data.get("linked_at")), str(data.get("by", ""))
    )


def _code(channel: str, code: str, raw: str) -> PairingCode:
    data = _json(raw)
    return PairingCode(
        channel,
        code,
        str(data.get("external_id", "")),
        str(data.get("name", "")),
        str(data.get("username", "")),
        _int(data.get("issued_at")),
        _int(data.get("expires_at")),
    )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _json(raw: str) -> dict[str, object]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
