"""The web channel: REST, SSE chat, the OpenAI-compatible API and the web page (SPEC 8)."""

from __future__ import annotations

from channels.web.app import create_app
from channels.web.channel import WebChannel

__all__ = ["WebChannel", "create_app"]
