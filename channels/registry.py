"""The channels the daemon knows, by config section name (also the tag on every stored message)."""

from __future__ import annotations

from channels.base import Channel
from channels.telegram import TelegramChannel
from channels.web import WebChannel

CHANNELS: dict[str, type[Channel]] = {
    "web": WebChannel,
    "telegram": TelegramChannel,
}
