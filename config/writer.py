"""Writing the configuration file (``hero-agent init``): edit in place, keep what the person wrote.

- Where: ``--config FILE`` (created when missing), else the file discovery finds, else
  ``$XDG_CONFIG_HOME/hero-agent/config.toml``.
- How: a round trip through tomlkit, so comments, ordering and every key that ``init`` does not manage
  survive; only the keys set through :meth:`ConfigEdit.set` change.
- Safely: the new text must load (validated like at start-up, before anything is written); the previous
  file is kept as ``<file>.bak``; the new file is written to a temporary file in the same directory with
  mode 0600 (it holds secrets), flushed to disk, then renamed over the old one, so a crash leaves the
  old or the new file, never half of one.

Like the loader, this is the only place that touches the file; secrets handed to it come from the
environment or stdin (:func:`secret_from_env`), never from a command-line value.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Table
from tomlkit.toml_document import TOMLDocument

from config.errors import ConfigError
from config.loader import discover_config, load_settings, user_config_path
from config.settings import Settings

HEADER = (
    "hero-agent configuration, written by `hero-agent init` (run it again to change it).\n"
    "Every key, with its default: docs/hero-agent.example.toml. This file holds secrets: keep it 0600."
)


def config_target(path: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The file ``init`` writes: ``path`` (may not exist yet), the discovered file, or the XDG default."""
    env = os.environ if env is None else env
    if path:
        return Path(path).expanduser().absolute()
    if env.get("HERO_AGENT_CONFIG"):  # named: written there even when it does not exist yet
        return Path(env["HERO_AGENT_CONFIG"]).expanduser().absolute()
    found = discover_config(None, env)
    return (found or user_config_path(env)).absolute()


def secret_from_env(var: str, env: Mapping[str, str] | None = None) -> str:
    """The value of ``$var`` (a secret handed to ``init`` by name); ConfigError when unset or empty."""
    env = os.environ if env is None else env
    value = env.get(var, "")
    if not value.strip():
        raise ConfigError(var, "is not set (or empty) in the environment")
    return value.strip()


def env_value(var: str, env: Mapping[str, str] | None = None) -> str:
    """``$var`` or "" (``init`` offers a key found in the environment as the default)."""
    env = os.environ if env is None else env
    return env.get(var, "").strip()


class ConfigEdit:
    """A TOML document being edited: the original text and the document to change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.original = path.read_text(encoding="utf-8") if path.is_file() else ""
        try:
            self.doc: TOMLDocument = tomlkit.parse(self.original)
        except tomlkit.exceptions.ParseError as exc:
            raise ConfigError(str(path), f"invalid TOML: {exc}") from None
        if not self.original:
            for line in HEADER.splitlines():
                self.doc.add(tomlkit.comment(line))
            self.doc.add(tomlkit.nl())
        self.changed: list[str] = []

    @property
    def exists(self) -> bool:
        return bool(self.original) or self.path.is_file()

    def get(self, section: str, key: str, default: Any = None) -> Any:
        table = self.doc.get(section)
        if isinstance(table, Mapping) and key in table:
            value = table[key]
            return value.unwrap() if hasattr(value, "unwrap") else value
        return default

    def set(self, section: str, key: str, value: Any) -> None:
        """Set ``[section] key = value`` (a table of its own when the section is new)."""
        if self.get(section, key) == value:
            return
        table = self.doc.get(section)
        if not isinstance(table, Table):
            table = tomlkit.table()
            self.doc.add(section, table)
        table[key] = value
        self.changed.append(f"{section}.{key}")

    def text(self) -> str:
        return tomlkit.dumps(self.doc)

    def validate(self, env: Mapping[str, str] | None = None) -> Settings:
        """Load the new text as the daemon would (ConfigError naming the key when it would not start)."""
        text = self.text()
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(self.path), f"invalid TOML: {exc}") from None
        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / "config.toml"
            probe.write_text(text, encoding="utf-8")
            return load_settings(str(probe), os.environ if env is None else env)

    def write(self) -> Path | None:
        """Write the file (0600, atomically); the previous file goes to ``.bak``, whose path is returned."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        backup = None
        if self.path.exists():
            backup = self.path.with_name(self.path.name + ".bak")
            _write_private(backup, self.path.read_bytes())
        _write_private(self.path, self.text().encode("utf-8"))
        return backup


def _write_private(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
