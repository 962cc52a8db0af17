"""Who wrote, where, and whether the bot is addressed (SPEC 5).

* A private chat belongs to the sender: ``tg:<telegram id>``, unless a ``[users.<name>]`` section links
  that id, in which case it is ``<name>`` (the same person as on the other channels).
* A group chat is its own scope, ``tg-group:<chat id>``; each message records its sender ``tg:<id>``.
  In a group the bot only reacts when mentioned (``@botname``), replied to, or commanded (``/cmd`` or
  ``/cmd@botname``).
* Only ``allowed_users`` and linked ids are answered: linked by a ``[users.<name>]`` section, or by an
  approved pairing (:mod:`agent.pairing`, stored). Stored links are checked in the store for every
  message (an unlink takes effect at once) and remembered here so the rest of the update's handling
  sees the same user.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from telegram import Message, MessageEntity, Update

from channels.telegram.media import Attached, media_of
from config import Settings

#: message attributes we recognise but do not support (answered with a clear "not supported");
#: voice notes, photos and image documents are read (:mod:`.media`)
UNSUPPORTED = (
    "audio",
    "document",
    "sticker",
    "video",
    "video_note",
    "animation",
    "location",
    "contact",
    "poll",
    "venue",
    "dice",
)


#: stored links kept in memory at most (each is read again from the store on every message anyway)
MAX_REMEMBERED = 10_000


class Kind(StrEnum):
    TEXT = "text"
    COMMAND = "command"
    #: a voice note: transcribed, the transcript is the message
    VOICE = "voice"
    #: a photo, an image document or an album of them, with its caption as the text
    IMAGES = "images"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class Incoming:
    """One update the bot should react to."""

    update_id: int
    kind: Kind
    chat_id: int
    sender_id: int
    is_group: bool
    message_id: int
    #: the text for the agent: a group mention removed, ``/cmd@bot`` normalised to ``/cmd``
    text: str
    #: the command name without slash (``"stop"``), or ``""``
    command: str = ""
    #: what was not supported ("voice", "photo", ...)
    media: str = ""
    #: the sender's name and @username as Telegram shows them (for pairing requests)
    sender_name: str = ""
    sender_username: str = ""
    #: the voice note or images of a VOICE or IMAGES message
    attached: Attached | None = None
    #: an album's id (its photos arrive as one update each and are answered as one turn)
    media_group_id: str = ""
    #: False only for an album part in a group that does not itself address the bot (another part
    #: of the album may, usually the one with the caption)
    addressed: bool = True
    #: the other updates of an album answered by this one
    also: tuple[int, ...] = ()


class Identity:
    """Maps Telegram ids to canonical users and decides who is answered."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._allowed = frozenset(settings.telegram.allowed_users)
        #: stored links as last read from the store (see :meth:`remember`)
        self._links: dict[int, str] = {}

    def user_for(self, telegram_id: int) -> str:
        return (
            self._settings.user_for_telegram_id(telegram_id)
            or self._links.get(telegram_id)
            or f"tg:{telegram_id}"
        )

    def configured(self, telegram_id: int) -> bool:
        """Answered by the config alone: ``allowed_users`` or a ``[users.<name>]`` section."""
        return telegram_id in self._allowed or self._settings.user_for_telegram_id(telegram_id) is not None

    def linked(self, telegram_id: int) -> bool:
        """Linked by an approved pairing, as last read from the store."""
        return telegram_id in self._links

    def remember(self, telegram_id: int, user: str | None) -> None:
        """What the store said this id is (None: not linked, or no longer)."""
        if user is None:
            self._links.pop(telegram_id, None)
        else:
            if len(self._links) >= MAX_REMEMBERED and telegram_id not in self._links:
                self._links.clear()
            self._links[telegram_id] = user

    def owner(self, incoming: Incoming) -> str:
        """The user id that owns the chat's scope."""
        if incoming.is_group:
            return f"tg-group:{incoming.chat_id}"
        return self.user_for(incoming.sender_id)

    @staticmethod
    def sender(incoming: Incoming) -> str:
        """What a group message records as its sender (empty in private chats: the owner wrote it)."""
        return f"tg:{incoming.sender_id}" if incoming.is_group else ""


def classify(update: Update, bot_username: str, bot_id: int, image_cap: int) -> Incoming | None:
    """The update as something to react to, or None (not a message, from a bot, not addressed).
    ``image_cap`` picks the size of a photo to fetch (``[agent] max_attachment_bytes``)."""
    msg = update.message
    if msg is None or msg.from_user is None or msg.from_user.is_bot:
        return None
    is_group = msg.chat.type in ("group", "supergroup")
    sender_id, chat_id, message_id = msg.from_user.id, msg.chat.id, msg.message_id

    sender = msg.from_user

    def make(kind: Kind, text: str, command: str = "", media: str = "") -> Incoming:
        return Incoming(
            update.update_id,
            kind,
            chat_id,
            sender_id,
            is_group,
            message_id,
            text,
            command,
            media,
            sender.full_name,
            sender.username or "",
        )

    text = msg.text
    attached = media_of(msg, image_cap) if text is None else None
    if attached is not None:
        caption = msg.caption or ""
        addressed = not is_group or _addressed(msg, caption, bot_username, bot_id)
        if not addressed and not msg.media_group_id:
            return None
        if is_group:
            caption = _strip_mention(caption, bot_username)
        kind = Kind.VOICE if attached.voice is not None else Kind.IMAGES
        return dataclasses.replace(
            make(kind, caption.strip()),
            attached=attached,
            media_group_id=msg.media_group_id or "",
            addressed=addressed,
        )
    if text is None:
        media = next((name for name in UNSUPPORTED if getattr(msg, name, None)), "")
        if not media or (is_group and not _addressed(msg, msg.caption or "", bot_username, bot_id)):
            return None
        return make(Kind.UNSUPPORTED, "", media=media)
    command, rest, for_us = _command(msg, bot_username)
    if command:
        if not for_us:
            return None  # "/cmd@otherbot" in a shared group
        normalised = f"/{command} {rest}".strip()
        return make(Kind.COMMAND, normalised, command=command)
    if is_group:
        if not _addressed(msg, text, bot_username, bot_id):
            return None
        text = _strip_mention(text, bot_username)
    if not text.strip():
        return None
    return make(Kind.TEXT, text)


def _command(msg: Message, bot_username: str) -> tuple[str, str, bool]:
    """(command, rest of the text, addressed to us) for a message starting with a bot_command."""
    text = msg.text or ""
    for entity in msg.entities:
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            token = msg.parse_entity(entity)
            name, _, target = token[1:].partition("@")
            rest = text[len(token) :].strip()
            return name.lower(), rest, not target or target.lower() == bot_username.lower()
    return "", text, True


def _addressed(msg: Message, text: str, bot_username: str, bot_id: int) -> bool:
    reply = msg.reply_to_message
    if reply is not None and reply.from_user is not None and reply.from_user.id == bot_id:
        return True
    mention = f"@{bot_username}".lower()
    entities = msg.entities if msg.text is not None else msg.caption_entities
    for entity in entities:
        if entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == bot_id:
            return True
        if entity.type == MessageEntity.MENTION:
            value = msg.parse_entity(entity) if msg.text is not None else msg.parse_caption_entity(entity)
            if value.lower() == mention:
                return True
    return mention in text.lower().split()


def _strip_mention(text: str, bot_username: str) -> str:
    mention = f"@{bot_username}".lower()
    words = [w for w in text.split(" ") if w.lower().rstrip(",:;") != mention]
    return " ".join(words).strip()
