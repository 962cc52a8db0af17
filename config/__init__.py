"""Configuration: discovery, environment overrides and validation into typed, immutable values.

Only this package reads files and the environment. Everything else receives the value objects
defined in :mod:`config.settings` through its constructor.
"""

from __future__ import annotations

from config.errors import ConfigError
from config.loader import load_settings
from config.settings import (
    AgentSettings,
    LLMSettings,
    LoggingSettings,
    MCPServerSettings,
    MemorySettings,
    Settings,
    StoreSettings,
    TelegramSettings,
    ToolsSettings,
    UserLink,
    WebSettings,
)

__all__ = [
    "AgentSettings",
    "ConfigError",
    "LLMSettings",
    "LoggingSettings",
    "MCPServerSettings",
    "MemorySettings",
    "Settings",
    "StoreSettings",
    "TelegramSettings",
    "ToolsSettings",
    "UserLink",
    "WebSettings",
    "load_settings",
]
