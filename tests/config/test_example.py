"""``docs/hero-agent.example.toml``: it loads, it names every settings key, and its values are the
defaults (so the example cannot drift from the code)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from config._validate import SECTIONS
from config.loader import load_settings
from config.settings import MCPServerSettings, UserLink

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "hero-agent.example.toml"


def section_text(text: str, header: str) -> str:
    """The lines from ``[header]`` (or a commented ``# [[header]]``/``# [header]``) to the next header."""
    start = re.search(rf"^(# )?\[\[?{re.escape(header)}(\.[a-z]+)?\]\]?$", text, re.M)
    assert start, f"no [{header}] in the example"
    rest = text[start.end() :]
    end = re.search(r"^\[", rest, re.M)
    return rest[: end.start()] if end else rest


def test_every_key_is_named_with_a_comment() -> None:
    text = EXAMPLE.read_text()
    missing = []
    for section, cls in SECTIONS.items():
        body = section_text(text, section)
        for f in dataclasses.fields(cls):
            named = rf"^(# )?{f.name} = " if f.name != "mcp_servers" else r"^# \[\[tools\.mcp_servers\]\]"
            if not re.search(named, body, re.M):
                missing.append(f"{section}.{f.name}")
    # the tables of tables are commented-out examples (a working default has none)
    for cls, header in ((MCPServerSettings, "tools.mcp_servers"), (UserLink, "users")):
        body = section_text(text, header)
        for f in dataclasses.fields(cls):
            if not (cls is UserLink and f.name == "name") and not re.search(rf"^# {f.name} = ", body, re.M):
                missing.append(f"{header}.{f.name}")
    assert missing == []
    # and every key line has a comment above it (or in its block)
    assert text.count("\n# ") > 60


def test_it_loads_and_its_values_are_the_defaults(tmp_path: Path) -> None:
    env = {"HOME": str(Path.home())}  # "~" in store.path expands to the real home, as the default does
    example = load_settings(str(EXAMPLE), env)
    defaults = load_settings(None, {**env, "XDG_CONFIG_HOME": str(tmp_path)})
    assert dataclasses.replace(example, source=None) == dataclasses.replace(defaults, source=None)
