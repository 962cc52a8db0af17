"""Turn a raw, merged mapping (TOML file + environment) into the frozen :mod:`config.settings` values.

The conversion is driven by the dataclass field types, so a field added to a section is validated
without touching this module. A few keys have shapes TOML expresses better than a flat field
(``web.tokens``, ``tools.mcp_servers``, ``[users.<name>]``); they have dedicated converters here.
Every error is a :class:`ConfigError` naming the key path; secret values never appear in messages.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from config.errors import ConfigError
from config.settings import (
    AgentSettings,
    LLMSettings,
    LoggingSettings,
    MCPServerSettings,
    MemorySettings,
    StoreSettings,
    TelegramSettings,
    ToolsSettings,
    UserLink,
    WebSettings,
)

T = TypeVar("T")

#: TOML section name -> dataclass (``users`` is handled separately: it is a table of tables)
SECTIONS: dict[str, type[Any]] = {
    "agent": AgentSettings,
    "llm": LLMSettings,
    "memory": MemorySettings,
    "store": StoreSettings,
    "web": WebSettings,
    "telegram": TelegramSettings,
    "tools": ToolsSettings,
    "logging": LoggingSettings,
}

#: keys whose values are secrets: never echoed in an error, redacted by ``config show``
SECRET_KEYS = frozenset(
    {"llm.api_key", "llm.transcription_api_key", "telegram.token", "telegram.webhook_secret", "store.secret"}
)

CONTEXT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
USER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")

ENUMS: dict[str, tuple[str, ...]] = {
    "llm.provider": ("openai", "anthropic"),
    "llm.vision": ("auto", "true", "false"),
    "store.engine": ("embedded", "osis", "postgres"),
    "store.writer": ("auto", "thread", "process"),
    "telegram.mode": ("polling", "webhook"),
    "logging.level": ("debug", "info", "warning", "error", "critical"),
    "logging.format": ("auto", "json", "console"),
    "tools.mcp_servers.transport": ("stdio", "http"),
}
#: integer keys that must be at least 1 (every other integer must be >= 0)
AT_LEAST_ONE = frozenset(
    {
        "agent.max_tool_iterations",
        "agent.max_message_chars",
        "agent.max_tool_result_chars",
        "agent.history_limit",
        "telegram.pairing_attempts_per_hour",
        "llm.context_window",
        "llm.max_output_tokens",
        "tools.http_max_bytes",
        "web.max_body_bytes",
        "memory.max_memories_shown",
        "telegram.max_concurrent_turns",
        "agent.max_attachment_bytes",
        "agent.max_audio_bytes",
        "agent.max_audio_seconds",
    }
)
#: the most one attachment may hold: it must fit one OSIS request (16 MiB, base64 in JSON)
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
PORT_KEYS_SUFFIX = "port"
#: the type of fields written as a TOML table of strings
PAIRS = tuple[tuple[str, str], ...]


def field_types(cls: type[Any]) -> dict[str, Any]:
    """Field name -> resolved type of a settings dataclass (annotations are strings here)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "a list"
    if tp is bool:
        return "a boolean"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is Path:
        return "a path string"
    return "a string"


def is_optional(tp: Any) -> tuple[bool, Any]:
    """``X | None`` -> (True, X)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return True, args[0]
    return False, tp


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check/convert one TOML value (already typed by TOML or by the env parser) against ``tp``."""
    optional, tp = is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(key, f"must be {type_name(tp)}")
    if tp == PAIRS:
        # a TOML table of strings (MCP env, headers); values may be secrets: never echoed
        table = require_table(key, value)
        for name, item in table.items():
            if not isinstance(item, str):
                raise ConfigError(f"{key}.{name}", "must be a string")
        return tuple(table.items())
    if typing.get_origin(tp) is tuple:
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, list | tuple):
            raise ConfigError(key, "must be a list")
        return tuple(coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value))
    ok: bool
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str or tp is Path:
        ok = isinstance(value, str)
        if ok and tp is Path:
            value = Path(value).expanduser()
    else:  # pragma: no cover - a new field type needs a converter here
        raise ConfigError(key, f"unsupported setting type {tp!r}")
    if not ok:
        raise ConfigError(key, f"must be {type_name(tp)}")
    return value


def _check_value(key: str, value: Any) -> None:
    """Ranges and enums, by key path (``tools.mcp_servers[0].transport`` uses its generic path)."""
    generic = re.sub(r"\[\d+\]", "", key)
    shown = "" if generic in SECRET_KEYS else f" (got {value!r})"
    if generic in ENUMS and value not in ENUMS[generic]:
        raise ConfigError(key, f"must be one of {', '.join(ENUMS[generic])}{shown}")
    leaf = generic.rsplit(".", 1)[-1]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if leaf.endswith(PORT_KEYS_SUFFIX) and isinstance(value, int):
        if not 1 <= value <= 65535:
            raise ConfigError(key, f"must be 1-65535{shown}")
    elif any(w in leaf for w in ("timeout", "deadline", "ttl_s", "interval_s", "_per_s")):
        # poll_timeout_s is the Bot API long-poll length: 0 means short polling and is valid
        if value < 0 or (value == 0 and leaf != "poll_timeout_s"):
            raise ConfigError(key, f"must be positive{shown}")
    elif leaf == "temperature":
        if not 0 <= value <= 2:
            raise ConfigError(key, f"must be between 0 and 2{shown}")
    elif generic == "agent.max_attachment_bytes" and not 1 <= value <= MAX_ATTACHMENT_BYTES:
        raise ConfigError(key, f"must be 1-{MAX_ATTACHMENT_BYTES}{shown}")
    elif generic in AT_LEAST_ONE:
        if value < 1:
            raise ConfigError(key, f"must be at least 1{shown}")
    elif value < 0:
        raise ConfigError(key, f"must not be negative{shown}")


def build_dataclass(cls: type[T], prefix: str, raw: Mapping[str, Any], extra: Mapping[str, Any]) -> T:
    """Build ``cls`` from ``raw`` (unknown keys rejected); ``extra`` holds pre-converted fields."""
    types_ = field_types(cls)
    kwargs: dict[str, Any] = dict(extra)
    for name, value in raw.items():
        key = f"{prefix}.{name}"
        if name not in types_ or name in extra:
            raise ConfigError(key, "unknown key")
        converted = coerce(key, value, types_[name])
        for item_key, item in _flatten(key, converted):
            _check_value(item_key, item)
        kwargs[name] = converted
    return cls(**kwargs)


def _flatten(key: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, tuple):
        return [(key, v) for v in value]
    return [(key, value)]


def require_table(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, "must be a table")
    return value


def build_tokens(raw: Any) -> tuple[tuple[str, str], ...]:
    """``[web] tokens = { "<token>" = "<user>" }``. The token is secret: never part of a key path."""
    table = require_table("web.tokens", raw)
    out: list[tuple[str, str]] = []
    for token, user in table.items():
        if not token.strip():
            raise ConfigError("web.tokens", "a token must not be empty")
        if not isinstance(user, str) or not USER_NAME_RE.match(user):
            raise ConfigError("web.tokens", "each token must map to a user name (letters, digits, _ . @ : -)")
        out.append((token, user))
    return tuple(out)


def build_mcp_servers(raw: Any) -> tuple[MCPServerSettings, ...]:
    """``[[tools.mcp_servers]]`` (each with ``name``) or ``[tools.mcp_servers.<name>]`` tables."""
    items: list[tuple[str, Mapping[str, Any]]]
    if isinstance(raw, Mapping):
        items = []
        for name, body in raw.items():
            named = dict(require_table(f"tools.mcp_servers.{name}", body))
            if named.setdefault("name", name) != name:
                raise ConfigError(f"tools.mcp_servers.{name}.name", "must match the table name")
            items.append((f"tools.mcp_servers.{name}", named))
    elif isinstance(raw, list):
        items = [
            (f"tools.mcp_servers[{i}]", require_table(f"tools.mcp_servers[{i}]", t))
            for i, t in enumerate(raw)
        ]
    else:
        raise ConfigError("tools.mcp_servers", "must be an array of tables or a table of tables")
    servers: list[MCPServerSettings] = []
    seen: set[str] = set()
    for key, table in items:
        if not isinstance(table.get("name"), str) or not table["name"]:
            raise ConfigError(f"{key}.name", "is required")
        server = build_dataclass(MCPServerSettings, key, table, {})
        if server.name in seen:
            raise ConfigError(f"{key}.name", f"duplicate MCP server name {server.name!r}")
        seen.add(server.name)
        if server.transport == "stdio" and not server.command:
            raise ConfigError(f"{key}.command", "is required for the stdio transport")
        if server.transport == "http" and not server.url:
            raise ConfigError(f"{key}.url", "is required for the http transport")
        servers.append(server)
    return tuple(servers)


def build_users(raw: Any) -> tuple[UserLink, ...]:
    """``[users.<name>] telegram_ids = [...]``."""
    links: list[UserLink] = []
    claimed: dict[int, str] = {}
    for name, body in require_table("users", raw).items():
        if not USER_NAME_RE.match(name):
            raise ConfigError(f"users.{name}", "invalid user name (letters, digits, _ . @ : -)")
        link = build_dataclass(
            UserLink, f"users.{name}", require_table(f"users.{name}", body), {"name": name}
        )
        for tid in link.telegram_ids:
            if tid in claimed:
                raise ConfigError(
                    f"users.{name}.telegram_ids", f"id {tid} is already linked to {claimed[tid]!r}"
                )
            claimed[tid] = name
        links.append(link)
    return tuple(links)


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_context(key: str, value: str) -> None:
    if not CONTEXT_RE.match(value):
        raise ConfigError(
            key, f"invalid context name {value!r}: use 1-64 of a-z 0-9 _ - starting with a letter or digit"
        )
