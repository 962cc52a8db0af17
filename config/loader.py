"""Configuration discovery and loading (SPEC section 4).

Discovery: ``--config FILE``, else ``$HERO_AGENT_CONFIG``, else ``./hero-agent.toml``, else
``$XDG_CONFIG_HOME/hero-agent/config.toml`` (``~/.config`` by default). No file at all is valid.

Precedence, lowest first: built-in defaults < the TOML file < conventional variables (``OPENAI_API_KEY``,
``OSIS_URL`` ...) < ``HERO_AGENT_<SECTION>__<KEY>`` variables. ``OSIS_URL`` also switches ``store.engine``
to ``osis`` unless the file or ``HERO_AGENT_STORE__ENGINE`` names an engine: someone who points at an
OSIS server wants to use it. Likewise ``ANTHROPIC_API_KEY`` alone (no ``OPENAI_API_KEY``, no provider in
the file or ``HERO_AGENT_LLM__PROVIDER``) selects ``llm.provider = "anthropic"``.

This package is the only one that reads files and the environment.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from config import _validate as v
from config.errors import ConfigError
from config.settings import Settings, UserLink

ENV_PREFIX = "HERO_AGENT_"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
#: prefixed variables that are not ``<SECTION>__<KEY>`` overrides
_PLAIN_PREFIXED = frozenset({"HERO_AGENT_CONFIG", "HERO_AGENT_DATA_DIR"})


def discover_config(path: str | None, env: Mapping[str, str]) -> Path | None:
    """The configuration file to read, or None (defaults only)."""
    if path:
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            raise ConfigError("--config", f"file not found: {explicit}")
        return explicit
    if env.get("HERO_AGENT_CONFIG"):
        named = Path(env["HERO_AGENT_CONFIG"]).expanduser()
        if not named.is_file():
            raise ConfigError("HERO_AGENT_CONFIG", f"file not found: {named}")
        return named
    local = Path("hero-agent.toml")
    if local.is_file():
        return local.absolute()
    user_file = user_config_path(env)
    return user_file if user_file.is_file() else None


def user_config_path(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/hero-agent/config.toml`` (``~/.config`` by default), existing or not."""
    xdg = env.get("XDG_CONFIG_HOME") or str(_home(env) / ".config")
    return Path(xdg).expanduser() / "hero-agent" / "config.toml"


def load_settings(path: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Discover, read, merge and validate the configuration. Raises :class:`ConfigError`."""
    env = os.environ if env is None else env
    source = discover_config(path, env)
    raw: dict[str, Any] = _read_toml(source) if source else {}
    origins: dict[str, str] = {}
    explicit_engine = "engine" in raw.get("store", {}) if isinstance(raw.get("store"), dict) else False
    try:
        overrides = _prefixed_overrides(env, origins)
        _apply_conventional(raw, env, overrides, origins, explicit_engine)
        for (section, *rest), value in overrides.items():
            _put(raw, section, *rest, value=value)
        return _build(raw, env, source)
    except ConfigError as exc:
        generic = exc.key.split("[", 1)[0]
        if generic in origins and origins[generic] not in exc.reason:
            raise ConfigError(exc.key, f"{exc.reason} (set by ${origins[generic]})") from None
        raise


def _home(env: Mapping[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def _read_toml(source: Path) -> dict[str, Any]:
    try:
        with source.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message names the line and column, never the value itself
        raise ConfigError(str(source), f"invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(str(source), f"cannot read: {exc.strerror}") from None


def _put(raw: dict[str, Any], *path: str, value: Any) -> None:
    node = raw
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(path[: i + 1]), "must be a table")
        node = child
    node[path[-1]] = value


def _prefixed_overrides(env: Mapping[str, str], origins: dict[str, str]) -> dict[tuple[str, ...], Any]:
    """``HERO_AGENT_<SECTION>__<KEY>`` (and ``HERO_AGENT_USERS__<NAME>__<KEY>``), parsed per field type."""
    out: dict[tuple[str, ...], Any] = {}
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or name in _PLAIN_PREFIXED or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        section = parts[0]
        if section == "users" and len(parts) == 3:
            key, tp = ".".join(parts), v.field_types(UserLink).get(parts[2])
        elif section in v.SECTIONS and len(parts) == 2:
            key, tp = ".".join(parts), v.field_types(v.SECTIONS[section]).get(parts[1])
        else:
            raise ConfigError(".".join(parts), f"unknown setting (from ${name})")
        if tp is None or key == "users.name":
            raise ConfigError(key, f"unknown key (from ${name})")
        origins[key] = name
        out[tuple(parts)] = _parse_env(key, name, text, tp)
    return out


def _parse_env(key: str, var: str, text: str, tp: Any) -> Any:
    secret = key in v.SECRET_KEYS
    if key == "web.tokens":
        return _parse_tokens(var, text)
    if key == "tools.mcp_servers":
        return _parse_json(key, var, text)
    optional, base = v.is_optional(tp)
    stripped = text.strip()
    if optional and stripped.lower() in ("", "none", "null"):
        return None
    try:
        if base is bool:
            lowered = stripped.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if base is int:
            return int(stripped)
        if base is float:
            return float(stripped)
    except ValueError:
        shown = "" if secret else f" (got {text!r})"
        raise ConfigError(key, f"must be {v.type_name(base)}{shown} (from ${var})") from None
    if typing.get_origin(base) is tuple:
        item_tp = typing.get_args(base)[0]
        items = (
            _parse_json(key, var, text)
            if stripped.startswith("[")
            else [s.strip() for s in text.split(",") if s.strip()]
        )
        if not isinstance(items, list):
            raise ConfigError(key, f"must be a list (from ${var})")
        return [
            _parse_env(f"{key}[{i}]", var, x, item_tp) if isinstance(x, str) else x
            for i, x in enumerate(items)
        ]
    return text


def _parse_json(key: str, var: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(key, f"invalid JSON at position {exc.pos} (from ${var})") from None


def _parse_tokens(var: str, text: str) -> dict[str, str]:
    """``{"tok": "alice"}`` as JSON, or ``tok=alice,tok2=bob``. Never echoes the text (tokens are secret)."""
    if text.strip().startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError("web.tokens", f"invalid JSON object (from ${var})") from None
        if not isinstance(parsed, dict):
            raise ConfigError("web.tokens", f"must be a JSON object (from ${var})")
        return parsed
    pairs: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        token, sep, user = item.partition("=")
        if not sep:
            raise ConfigError("web.tokens", f"expected token=user pairs separated by commas (from ${var})")
        pairs[token.strip()] = user.strip()
    return pairs


def _apply_conventional(
    raw: dict[str, Any],
    env: Mapping[str, str],
    overrides: Mapping[tuple[str, ...], Any],
    origins: dict[str, str],
    explicit_engine: bool,
) -> None:
    """The conventional variables; each applies only when set to a non-empty value."""
    llm_raw = raw.get("llm")
    llm: dict[str, Any] = llm_raw if isinstance(llm_raw, dict) else {}
    provider = overrides.get(("llm", "provider"), llm.get("provider"))
    if provider is None:
        provider = _provider_from_keys(env)
        if provider == "anthropic":
            _put(raw, "llm", "provider", value=provider)
            origins["llm.provider"] = "ANTHROPIC_API_KEY"
    conventional: list[tuple[str, tuple[str, str]]] = [
        ("TELEGRAM_BOT_TOKEN", ("telegram", "token")),
        ("OSIS_URL", ("store", "url")),
        ("OSIS_CONTEXT", ("store", "context")),
        ("HERO_AGENT_DATA_DIR", ("store", "path")),
    ]
    if provider == "anthropic":
        conventional += [
            ("ANTHROPIC_API_KEY", ("llm", "api_key")),
            ("ANTHROPIC_BASE_URL", ("llm", "base_url")),
        ]
    else:
        conventional += [("OPENAI_API_KEY", ("llm", "api_key")), ("OPENAI_BASE_URL", ("llm", "base_url"))]
    for var, (section, key) in conventional:
        if env.get(var):
            _put(raw, section, key, value=env[var])
            origins[f"{section}.{key}"] = var
    if env.get("OSIS_URL") and not explicit_engine:
        _put(raw, "store", "engine", value="osis")
        origins["store.engine"] = "OSIS_URL"
    _apply_osis_context(raw, env, origins)


def _apply_osis_context(raw: dict[str, Any], env: Mapping[str, str], origins: dict[str, str]) -> None:
    """``OSIS_CONTEXT`` names the context the agent's data lives in (hero_agent's meaning): it is every
    channel's default context unless the file's ``[agent] default_context`` says otherwise (and
    ``HERO_AGENT_AGENT__DEFAULT_CONTEXT``, applied after this, beats both)."""
    agent = raw.get("agent")
    if not env.get("OSIS_CONTEXT") or (isinstance(agent, dict) and "default_context" in agent):
        return
    try:
        v.check_context("agent.default_context", env["OSIS_CONTEXT"])
    except ConfigError as exc:
        raise ConfigError(exc.key, f"{exc.reason} (from $OSIS_CONTEXT)") from None
    _put(raw, "agent", "default_context", value=env["OSIS_CONTEXT"])
    origins["agent.default_context"] = "OSIS_CONTEXT"


def _provider_from_keys(env: Mapping[str, str]) -> str:
    """No provider named anywhere: ``ANTHROPIC_API_KEY`` alone means Anthropic (someone who only has
    that key wants to use it); otherwise the default, OpenAI-compatible."""
    if env.get("ANTHROPIC_API_KEY") and not env.get("OPENAI_API_KEY"):
        return "anthropic"
    return "openai"


def _build(raw: dict[str, Any], env: Mapping[str, str], source: Path | None) -> Settings:
    built: dict[str, Any] = {}
    raw.setdefault("store", {})  # the data dir default depends on the environment: always compute it
    for section, body in raw.items():
        if section == "users":
            built["users"] = v.build_users(body)
            continue
        if section not in v.SECTIONS:
            raise ConfigError(section, "unknown section")
        table = dict(v.require_table(section, body))
        extra: dict[str, Any] = {}
        if section == "web" and "tokens" in table:
            extra["tokens"] = v.build_tokens(table.pop("tokens"))
        if section == "tools" and "mcp_servers" in table:
            extra["mcp_servers"] = v.build_mcp_servers(table.pop("mcp_servers"))
        if section == "store" and "path" not in table:
            xdg_data = env.get("XDG_DATA_HOME") or str(_home(env) / ".local" / "share")
            table["path"] = str(Path(xdg_data) / "hero-agent")
        if section == "llm" and isinstance(table.get("vision"), bool):
            # vision = true | false | "auto": TOML booleans are kept as their names
            table["vision"] = "true" if table["vision"] else "false"
        if section == "llm" and table.get("provider") == "anthropic":
            table.setdefault("base_url", ANTHROPIC_BASE_URL)
            table.setdefault("model", ANTHROPIC_MODEL)
        built[section] = v.build_dataclass(v.SECTIONS[section], section, table, extra)
    settings = Settings(**built, source=source, os_user=os_user(env))
    _cross_checks(settings)
    return settings


def os_user(env: Mapping[str, str]) -> str:
    """The OS user name as ``getpass.getuser`` finds it (``LOGNAME``, ``USER``, ... then the password
    database); ``local`` when there is none (a container running as an unnamed uid)."""
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if env.get(var):
            return env[var]
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, OSError):
        return "local"


def _cross_checks(s: Settings) -> None:
    v.check_context("agent.default_context", s.agent.default_context)
    if s.store.context:
        v.check_context("store.context", s.store.context)
    for i, cidr in enumerate(s.tools.http_allow_cidrs):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"tools.http_allow_cidrs[{i}]", f"not an IP network: {cidr!r}") from None
    if s.web.local_user and not v.USER_NAME_RE.match(s.web.local_user):
        raise ConfigError("web.local_user", "must be a user name (letters, digits, _ . @ : -)")
    if s.store.engine == "osis" and not s.store.url:
        raise ConfigError("store.url", 'is required when store.engine is "osis" (or set OSIS_URL)')
    if s.store.url.startswith("unix:") and not s.store.url.startswith("unix:///"):
        raise ConfigError("store.url", "a unix socket URL names an absolute path: unix:///run/hero/osis.sock")
    if s.store.rpc_path and not s.store.rpc_path.startswith("/"):
        raise ConfigError("store.rpc_path", "must start with / (e.g. /hero_osis_ai/rpc)")
    if s.store.engine == "postgres" and not s.store.url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "store.url", 'must be a postgresql://user@host:port/db URL when store.engine is "postgres"'
        )
    if s.web.enabled and not s.web.tokens and not v.is_loopback(s.web.host):
        raise ConfigError(
            "web.host",
            f"{s.web.host!r} is not a loopback address: configure [web] tokens to serve other hosts",
        )
    if s.telegram.enabled and not s.telegram.token:
        raise ConfigError(
            "telegram.token", "is required when telegram.enabled is true (or set TELEGRAM_BOT_TOKEN)"
        )
    if s.telegram.enabled and s.telegram.mode == "webhook" and not s.telegram.webhook_url:
        raise ConfigError("telegram.webhook_url", 'is required when telegram.mode is "webhook"')
