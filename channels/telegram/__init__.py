"""The Telegram channel (python-telegram-bot in our own event loop); see docs/telegram.md."""

from __future__ import annotations

from channels.telegram.channel import TelegramChannel

__all__ = ["TelegramChannel"]
