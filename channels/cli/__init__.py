"""The terminal channel: ``hero-agent chat`` (interactive, prompt_toolkit) and the helpers of
``hero-agent ask``."""

from __future__ import annotations

from channels.cli.session import CliChat, history_path

__all__ = ["CliChat", "history_path"]
