"""Building Bot API updates the way Telegram's clients produce them (for :class:`FakeBotAPI`)."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any


class UpdateBuilder:
    """Mixin of the fake: message updates with realistic chats, senders, ids and entities; voice notes,
    photos and albums whose files the fake then serves through ``getFile`` and its file path."""

    bot_user: dict[str, Any]
    _lock: threading.RLock
    _chats: dict[int, dict[str, Any]]
    _msg_ids: dict[int, itertools.count[int]]
    #: file_id -> (file_path, bytes): what ``getFile`` and the file path serve
    files: dict[str, tuple[str, bytes]]
    _file_ids: itertools.count[int]

    def add_file(self, data: bytes, ext: str) -> dict[str, Any]:
        """Store ``data`` as a Telegram file; returns its ``file_id``/``file_unique_id``/``file_size``."""
        with self._lock:
            n = next(self._file_ids)
            file_id = f"FILE{n:04d}-AgADBAAD"
            self.files[file_id] = (f"files/file_{n}.{ext}", data)
        return {"file_id": file_id, "file_unique_id": f"U{n}", "file_size": len(data)}

    def voice_update(
        self,
        chat_id: int,
        user_id: int,
        audio: bytes,
        *,
        duration: int = 2,
        chat_type: str = "private",
        mime_type: str = "audio/ogg",
        reply_to_bot: int | None = None,
    ) -> dict[str, Any]:
        """A voice note as Telegram's clients send it (Ogg/Opus, ``duration`` in whole seconds)."""
        msg = self._user_message(chat_id, user_id, chat_type, "User")
        msg["voice"] = {**self.add_file(audio, "oga"), "duration": duration, "mime_type": mime_type}
        if reply_to_bot is not None:
            msg["reply_to_message"] = self._bot_reply(msg, reply_to_bot)
        return {"message": msg}

    def photo_update(
        self,
        chat_id: int,
        user_id: int,
        sizes: list[tuple[bytes, int, int]],
        *,
        caption: str | None = None,
        media_group_id: str | None = None,
        chat_type: str = "private",
    ) -> dict[str, Any]:
        """A photo: Telegram sends every size it made (``(bytes, width, height)``, smallest first),
        each a file of its own; an album's photos share ``media_group_id``, one update each."""
        msg = self._user_message(chat_id, user_id, chat_type, "User")
        msg["photo"] = [{**self.add_file(data, "jpg"), "width": w, "height": h} for data, w, h in sizes]
        if caption is not None:
            msg["caption"] = caption
            entities = _entities(caption)
            if entities:
                msg["caption_entities"] = entities
        if media_group_id is not None:
            msg["media_group_id"] = media_group_id
        return {"message": msg}

    def document_update(
        self,
        chat_id: int,
        user_id: int,
        data: bytes,
        *,
        file_name: str,
        mime_type: str,
        caption: str | None = None,
    ) -> dict[str, Any]:
        """A file sent as a document (uncompressed), with the name and type the client reported."""
        msg = self._user_message(chat_id, user_id, "private", "User")
        msg["document"] = {
            **self.add_file(data, file_name.rsplit(".", 1)[-1]),
            "file_name": file_name,
            "mime_type": mime_type,
        }
        if caption is not None:
            msg["caption"] = caption
        return {"message": msg}

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
            msg["reply_to_message"] = self._bot_reply(msg, reply_to_bot)
        return {"message": msg}

    def _bot_reply(self, msg: dict[str, Any], message_id: int) -> dict[str, Any]:
        return {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": msg["chat"],
            "from": self.bot_user,
            "text": "...",
        }

    def group_update(self, chat_id: int, user_id: int, text: str, **kw: Any) -> dict[str, Any]:
        return self.text_update(chat_id, user_id, text, chat_type="supergroup", **kw)

    def media_update(
        self, chat_id: int, user_id: int, kind: str = "voice", chat_type: str = "private"
    ) -> dict[str, Any]:
        """A voice/photo/document/sticker message (no text) whose file the fake does not serve (for the
        kinds the bot refuses; ``voice_update``/``photo_update`` make servable ones)."""
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
