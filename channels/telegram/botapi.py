"""The Bot API transport: PTB's ``HTTPXRequest`` with every answer checked for the Bot API's shape.

PTB trusts that whatever answers at ``api_base_url`` speaks the Bot API: an HTML page answered with
200, or JSON without ``ok``, surfaces as a ``KeyError`` or ``TypeError`` deep inside PTB (and an
unparsable body is logged whole). Every answer is therefore checked here, at the seam: a JSON object
with a boolean ``ok``, and a ``result`` when ``ok`` is true; anything else raises
:class:`BotAPIAnswerError`. It is a ``NetworkError``, because at run time a proxy answering junk for a
while is an outage like any other (PTB's poller and our sends retry it); at start it fails the channel
with one line naming ``telegram.api_base_url``.
"""

from __future__ import annotations

import json
from typing import Any

from telegram.error import NetworkError
from telegram.request import HTTPXRequest


class BotAPIAnswerError(NetworkError):
    """The server at ``telegram.api_base_url`` answered something that is not a Bot API answer."""


class BotAPIRequest(HTTPXRequest):
    """``HTTPXRequest`` whose answers must have the Bot API's shape (see the module docstring)."""

    @staticmethod
    def parse_json_payload(payload: bytes) -> dict[str, Any]:
        """The answer as a dict; :class:`BotAPIAnswerError` (without the body) when it is not one of
        the Bot API's. PTB documents this method as the place to customise parsing."""
        try:
            data = json.loads(payload.decode("utf-8", "replace"))
        except ValueError:
            raise BotAPIAnswerError("the answer is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
            raise BotAPIAnswerError('the answer is not a JSON object with a boolean "ok"')
        if data["ok"] and "result" not in data:
            raise BotAPIAnswerError('the answer has "ok": true but no "result"')
        return data
