"""The effective settings as a TOML-shaped dict (secrets redacted) and a small TOML writer.

Used by ``hero-agent config show``. Redacted secrets: ``llm.api_key``, ``telegram.token``,
``telegram.webhook_secret``, ``store.secret``, the token keys of ``web.tokens``, the values of every
MCP server's ``env`` and ``headers``, and the password of every URL (``postgresql://user:PW@host/db``,
``?password=PW``). A set secret shows as ``"***"``, an empty one as ``"<unset>"``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from config._validate import SECRET_KEYS, SECTIONS
from config.settings import Settings

REDACTED = "***"
UNSET = "<unset>"
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _mask(value: str) -> str:
    return REDACTED if value else UNSET


#: query parameters of a URL that hold a secret (libpq takes ``password`` and ``sslpassword`` there)
_SECRET_PARAMS = frozenset({"password", "sslpassword", "token", "secret", "api_key"})


def url_without_secrets(url: str) -> str:
    """``url`` with the password of its user part and secret query parameters masked: what a URL may
    show in ``config show``, logs and reports. Text that is no URL comes back unchanged."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{hostport}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
        query = urlencode([(k, REDACTED if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def settings_to_toml_dict(settings: Settings, redact: bool = True) -> dict[str, Any]:
    """Every section and key of ``settings`` (``None`` values omitted: TOML has no null)."""
    out: dict[str, Any] = {}
    for section in SECTIONS:
        values = getattr(settings, section)
        table: dict[str, Any] = {}
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            key = f"{section}.{f.name}"
            if value is None:
                continue
            if key == "web.tokens":
                # the token is the secret and the dict key: number the masks so that users stay visible
                table[f.name] = {
                    (f"{REDACTED}{i}" if redact else tok): user for i, (tok, user) in enumerate(value, 1)
                }
            elif key == "tools.mcp_servers":
                table[f.name] = [_mcp_server(server, redact) for server in value]
            elif key in SECRET_KEYS and redact:
                table[f.name] = _mask(value)
            elif redact and isinstance(value, str):
                table[f.name] = url_without_secrets(value)
            else:
                table[f.name] = _plain(value)
        out[section] = table
    out["users"] = {link.name: {"telegram_ids": list(link.telegram_ids)} for link in settings.users}
    return out


def _mcp_server(server: Any, redact: bool) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for f in dataclasses.fields(server):
        value = getattr(server, f.name)
        if f.name in ("env", "headers"):  # values are secrets (API keys, Authorization)
            table[f.name] = {k: (_mask(v) if redact else v) for k, v in value}
        elif redact and isinstance(value, str):
            table[f.name] = url_without_secrets(value)
        elif value is not None:
            table[f.name] = _plain(value)
    return table


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # a JSON string is a valid TOML basic string (same escapes)
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(data: dict[str, Any]) -> str:
    """Write the two-level shape of :func:`settings_to_toml_dict` as TOML (read back by tomllib)."""
    lines: list[str] = []
    for section, table in data.items():
        if section == "users":
            for name, body in table.items():
                lines.append(f"[users.{_key(name)}]")
                lines.extend(f"{_key(k)} = {_value(v)}" for k, v in body.items())
                lines.append("")
            continue
        arrays = {k: v for k, v in table.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        lines.append(f"[{section}]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in table.items() if k not in arrays)
        lines.append("")
        for name, items in arrays.items():
            for item in items:
                lines.append(f"[[{section}.{_key(name)}]]")
                lines.extend(f"{_key(k)} = {_value(v)}" for k, v in item.items())
                lines.append("")
    return "\n".join(lines)


def secret_values(settings: Settings) -> list[str]:
    """The configured secrets' values, for the log redactor to mask literally wherever they appear."""
    values = [
        settings.llm.api_key,
        settings.telegram.token,
        settings.telegram.webhook_secret,
        settings.store.secret,
    ]
    values += [token for token, _user in settings.web.tokens]
    for server in settings.tools.mcp_servers:
        values += [v for _k, v in server.env]
        values += [v for _k, v in server.headers]
    return [v for v in values if v]
