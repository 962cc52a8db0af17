"""Configuration: discovery, environment overrides and validation into typed, immutable values.

Only this package reads files and the environment. Everything else receives the value objects
defined in :mod:`config.settings` through its constructor.
"""

from __future__ import annotations

from config.errors import ConfigError, HeroError, describe_error
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
    "HeroError",
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
    "describe_error",
    "load_settings",
]
