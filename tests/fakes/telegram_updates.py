"""Building Bot API updates the way Telegram's clients produce them (for :class:`FakeBotAPI`)."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any


class UpdateBuilder:
    """Mixin of the fake: message updates with realistic chats, senders, ids and entities."""

    bot_user: dict[str, Any]
    _lock: threading.RLock
    _chats: dict[int, dict[str, Any]]
    _msg_ids: dict[int, itertools.count[int]]

    def text_update(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        chat_type: str = "private",
        reply_to_bot: int | None = None,
        first_name: str = "User",
        username: str | None = None,
    ) -> dict[str, Any]:
        """A message update with the entities real Telegram adds (bot_command at 0, @mentions)."""
        msg = self._user_message(chat_id, user_id, chat_type, first_name)
        if username is not None:
            msg["from"]["username"] = username
        msg["text"] = text
        entities = _entities(text)
        if entities:
            msg["entities"] = entities
        if reply_to_bot is not None:
            msg["reply_to_message"] = {
                "message_id": reply_to_bot,
                "date": int(time.time()),
                "chat": msg["chat"],
                "from": self.bot_user,
                "text": "...",
            }
        return {"message": msg}

    def group_update(self, chat_id: int, user_id: int, text: str, **kw: Any) -> dict[str, Any]:
        return self.text_update(chat_id, user_id, text, chat_type="supergroup", **kw)

    def media_update(
        self, chat_id: int, user_id: int, kind: str = "voice", chat_type: str = "private"
    ) -> dict[str, Any]:
        """A voice/photo/document/sticker message (no text)."""
        msg = self._user_message(chat_id, user_id, chat_type, "User")
        file = {"file_id": "f1", "file_unique_id": "u1"}
        msg[kind] = {
            "voice": {**file, "duration": 2},
            "photo": [{**file, "width": 10, "height": 10}],
            "document": {**file, "file_name": "a.pdf"},
            "sticker": {
                **file,
                "type": "regular",
                "width": 10,
                "height": 10,
                "is_animated": False,
                "is_video": False,
            },
        }[kind]
        return {"message": msg}

    def _user_message(self, chat_id: int, user_id: int, chat_type: str, first_name: str) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = first_name
        else:
            chat["title"] = f"group {chat_id}"
        with self._lock:
            self._chats[chat_id] = chat
            mid = next(self._msg_ids[chat_id])
        return {
            "message_id": mid,
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": user_id, "is_bot": False, "first_name": first_name},
        }


def _entities(text: str) -> list[dict[str, Any]]:
    """The entities Telegram's clients attach: a leading /command and @mentions (UTF-16 offsets)."""
    out: list[dict[str, Any]] = []
    if text.startswith("/"):
        length = len(text.split(maxsplit=1)[0]) if text.split() else 1
        out.append({"type": "bot_command", "offset": 0, "length": _u16(text[:length])})
    i = 0
    while (i := text.find("@", i)) != -1:
        j = i + 1
        while j < len(text) and (text[j].isalnum() or text[j] == "_"):
            j += 1
        in_command = bool(out) and out[0]["type"] == "bot_command" and i < len(text.split(maxsplit=1)[0])
        if j - i > 1 and not in_command and (i == 0 or not text[i - 1].isalnum()):
            out.append({"type": "mention", "offset": _u16(text[:i]), "length": _u16(text[i:j])})
        i = j
    return out


def _u16(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2
