"""``config show``: every section present, secrets redacted, TOML that reads back."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from channels.main import main
from channels.startup import store_location
from config.loader import load_settings
from config.redact import REDACTED, UNSET, settings_to_toml_dict, to_toml, url_without_secrets

SECRETS = {
    "api": "sk-APIKEY-0123456789abcdef",
    "bot": "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0",
    "hook": "HOOKSECRET-42-xyz",
    "store": "STORESECRET-42-xyz",
    "web": "WEBTOKEN-42-xyz",
    "mcp": "MCPENVSECRET-42-xyz",
    "hdr": "Bearer MCPHEADER-42-xyz",
}

CONFIG = f"""
[llm]
api_key = "{SECRETS["api"]}"
[telegram]
token = "{SECRETS["bot"]}"
webhook_secret = "{SECRETS["hook"]}"
[store]
secret = "{SECRETS["store"]}"
[web]
tokens = {{ "{SECRETS["web"]}" = "alice" }}
[[tools.mcp_servers]]
name = "fs"
command = "mcp-fs"
env = {{ FS_TOKEN = "{SECRETS["mcp"]}" }}
[[tools.mcp_servers]]
name = "remote"
transport = "http"
url = "http://127.0.0.1:1/mcp"
headers = {{ Authorization = "{SECRETS["hdr"]}" }}
[users.alice]
telegram_ids = [7]
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "hero-agent.toml"
    path.write_text(CONFIG)
    return path


def test_redacted_dict_hides_every_secret(config_file: Path) -> None:
    settings = load_settings(str(config_file), {"HOME": str(config_file.parent)})
    data = settings_to_toml_dict(settings)
    dumped = json.dumps(data)
    for secret in SECRETS.values():
        assert secret not in dumped
    assert data["llm"]["api_key"] == REDACTED
    assert data["store"]["secret"] == REDACTED
    assert data["web"]["tokens"] == {f"{REDACTED}1": "alice"}
    assert data["tools"]["mcp_servers"][0]["env"] == {"FS_TOKEN": REDACTED}
    assert data["tools"]["mcp_servers"][1]["headers"] == {"Authorization": REDACTED}
    assert data["users"] == {"alice": {"telegram_ids": [7]}}
    assert set(data) == {"agent", "llm", "memory", "store", "web", "telegram", "tools", "logging", "users"}


def test_unset_secrets_say_so(tmp_path: Path) -> None:
    data = settings_to_toml_dict(load_settings(None, {"HOME": str(tmp_path)}))
    assert data["llm"]["api_key"] == UNSET
    assert data["telegram"]["token"] == UNSET


def test_unredacted_toml_reads_back_to_the_same_settings(config_file: Path) -> None:
    env = {"HOME": str(config_file.parent)}
    settings = load_settings(str(config_file), env)
    text = to_toml(settings_to_toml_dict(settings, redact=False))
    again = config_file.parent / "again.toml"
    again.write_text(text)
    reloaded = load_settings(str(again), env)
    assert reloaded == dataclasses.replace(settings, source=again)


def test_config_show_output_has_no_secret(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    for secret in SECRETS.values():
        assert secret not in out
    parsed = tomllib.loads(out)
    assert parsed["llm"]["api_key"] == REDACTED
    assert main(["--config", str(config_file), "config", "show", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["telegram"]["token"] == REDACTED
    for secret in SECRETS.values():
        assert secret not in out


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://hero:PGPASS-42@db.lan:5432/agent", "postgresql://hero:***@db.lan:5432/agent"),
        (
            "postgresql://hero@db.lan/agent?sslmode=verify-full&password=PGPASS-42",
            "postgresql://hero@db.lan/agent?sslmode=verify-full&password=***",
        ),
        ("http://127.0.0.1:9999/hero_osis", "http://127.0.0.1:9999/hero_osis"),
        ("unix:///run/hero/osis.sock", "unix:///run/hero/osis.sock"),
        ("not a url", "not a url"),
    ],
)
def test_a_url_shows_without_its_password(url: str, shown: str) -> None:
    assert url_without_secrets(url) == shown


def test_config_show_and_the_banner_mask_a_database_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "PGPASS-42-xyz"
    cfg = tmp_path / "pg.toml"
    url = f"postgresql://hero:{secret}@127.0.0.1:5432/agent?sslpassword={secret}"
    cfg.write_text(f'[store]\nengine = "postgres"\nurl = "{url}"\n')
    assert main(["--config", str(cfg), "config", "show"]) == 0
    out = capsys.readouterr().out
    assert secret not in out
    assert tomllib.loads(out)["store"]["url"] == (
        "postgresql://hero:***@127.0.0.1:5432/agent?sslpassword=***"
    )
    settings = load_settings(str(cfg), {})
    assert secret not in store_location(settings)
