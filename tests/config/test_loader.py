"""Discovery, precedence, environment overrides and validation errors of ``config.loader``."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError
from config.loader import ANTHROPIC_BASE_URL, load_settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME and working directory, so no real user file is discovered."""
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error_of(text: str, home: Path, **env: str) -> ConfigError:
    cfg = write(home / "c.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(str(cfg), {"HOME": str(home), **env})
    return info.value


# --- discovery -------------------------------------------------------------------------------------


def test_no_file_gives_defaults_with_xdg_data_dir(home: Path) -> None:
    s = load_settings(None, {"HOME": str(home)})
    assert s.source is None
    assert s.store.engine == "embedded"
    assert s.store.path == home / ".local/share/hero-agent"
    assert s.web.port == 8780
    s2 = load_settings(None, {"HOME": str(home), "XDG_DATA_HOME": str(home / "data")})
    assert s2.store.path == home / "data/hero-agent"
    s3 = load_settings(None, {"HOME": str(home), "HERO_AGENT_DATA_DIR": str(home / "dd")})
    assert s3.store.path == home / "dd"


def test_discovery_order(home: Path) -> None:
    xdg = write(home / ".config/hero-agent/config.toml", "[web]\nport = 1001\n")
    env = {"HOME": str(home)}
    assert load_settings(None, env).source == xdg
    assert load_settings(None, env).web.port == 1001
    alt_xdg = write(home / "xdg/hero-agent/config.toml", "[web]\nport = 1005\n")
    assert load_settings(None, {**env, "XDG_CONFIG_HOME": str(home / "xdg")}).source == alt_xdg
    local = write(Path("hero-agent.toml"), "[web]\nport = 1002\n")
    assert load_settings(None, env).source == local.absolute()
    named = write(home / "named.toml", "[web]\nport = 1003\n")
    assert load_settings(None, {**env, "HERO_AGENT_CONFIG": str(named)}).web.port == 1003
    explicit = write(home / "explicit.toml", "[web]\nport = 1004\n")
    s = load_settings(str(explicit), {**env, "HERO_AGENT_CONFIG": str(named)})
    assert (s.web.port, s.source) == (1004, explicit)


def test_missing_explicit_files_are_errors(home: Path) -> None:
    with pytest.raises(ConfigError, match="file not found") as info:
        load_settings(str(home / "nope.toml"), {"HOME": str(home)})
    assert info.value.key == "--config"
    with pytest.raises(ConfigError) as info2:
        load_settings(None, {"HOME": str(home), "HERO_AGENT_CONFIG": str(home / "nope.toml")})
    assert info2.value.key == "HERO_AGENT_CONFIG"


def test_invalid_toml_names_the_file_and_line(home: Path) -> None:
    err = error_of('[web]\nport = = 3\napi_key = "sk-verysecretvalue123456"\n', home)
    assert "invalid TOML" in err.reason
    assert "line 2" in err.reason
    assert "sk-verysecret" not in str(err)


# --- environment and precedence --------------------------------------------------------------------


def test_precedence_defaults_file_conventional_prefixed(home: Path) -> None:
    cfg = write(home / "c.toml", '[llm]\napi_key = "from-file"\nbase_url = "http://file/v1"\n')
    env = {"HOME": str(home)}
    assert load_settings(str(cfg), env).llm.api_key == "from-file"
    env["OPENAI_API_KEY"] = "from-conventional"
    env["OPENAI_BASE_URL"] = "http://conv/v1"
    s = load_settings(str(cfg), env)
    assert (s.llm.api_key, s.llm.base_url) == ("from-conventional", "http://conv/v1")
    env["HERO_AGENT_LLM__API_KEY"] = "from-prefixed"
    assert load_settings(str(cfg), env).llm.api_key == "from-prefixed"


def test_prefixed_values_are_parsed_per_field_type(home: Path) -> None:
    env = {
        "HOME": str(home),
        "HERO_AGENT_WEB__PORT": "9000",
        "HERO_AGENT_WEB__ENABLED": "off",
        "HERO_AGENT_LLM__TEMPERATURE": "0.5",
        "HERO_AGENT_LLM__FALLBACK_MODELS": "m1, m2",
        "HERO_AGENT_TELEGRAM__ALLOWED_USERS": "[11, 22]",
        "HERO_AGENT_WEB__CORS_ORIGINS": '["http://a", "http://b"]',
        "HERO_AGENT_WEB__TOKENS": "tok1=alice,tok2=bob",
        "HERO_AGENT_USERS__ALICE__TELEGRAM_IDS": "11",
        "HERO_AGENT_TOOLS__MCP_SERVERS": '[{"name": "fs", "command": "mcp-fs", "env": {"K": "v"}}]',
        "HERO_AGENT_AGENT__SYSTEM_PROMPT": "be brief",
    }
    s = load_settings(None, env)
    assert s.web.port == 9000 and s.web.enabled is False
    assert s.llm.temperature == 0.5
    assert s.llm.fallback_models == ("m1", "m2")
    assert s.telegram.allowed_users == (11, 22)
    assert s.web.cors_origins == ("http://a", "http://b")
    assert s.web.tokens == (("tok1", "alice"), ("tok2", "bob"))
    assert s.user_for_telegram_id(11) == "alice"
    assert s.tools.mcp_servers[0].name == "fs" and s.tools.mcp_servers[0].env == (("K", "v"),)
    assert s.agent.system_prompt == "be brief"
    assert load_settings(None, {"HOME": str(home), "HERO_AGENT_LLM__TEMPERATURE": ""}).llm.temperature is None


@pytest.mark.parametrize(
    ("var", "value", "key", "reason"),
    [
        ("HERO_AGENT_WEB__PORT", "abc", "web.port", "must be an integer"),
        ("HERO_AGENT_WEB__PORT", "70000", "web.port", "must be 1-65535"),
        ("HERO_AGENT_WEB__PROT", "1", "web.prot", "unknown key"),
        ("HERO_AGENT_NOPE__X", "1", "nope.x", "unknown setting"),
        ("HERO_AGENT_WEB__ENABLED", "maybe", "web.enabled", "must be a boolean"),
    ],
)
def test_bad_env_values_name_key_and_variable(
    home: Path, var: str, value: str, key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"HOME": str(home), var: value})
    assert info.value.key == key
    assert reason in info.value.reason
    assert var in info.value.reason


def test_osis_context_is_the_default_context_below_the_file_and_the_override(home: Path) -> None:
    """Highest first: HERO_AGENT_AGENT__DEFAULT_CONTEXT, the file's [agent] default_context,
    OSIS_CONTEXT, "default" (docs/configuration.md)."""
    base = {"HOME": str(home)}
    assert load_settings(None, base).agent.default_context == "default"
    s = load_settings(None, {**base, "OSIS_CONTEXT": "geomind"})
    assert (s.agent.default_context, s.store.context) == ("geomind", "geomind")
    cfg = write(home / "c.toml", '[agent]\ndefault_context = "filed"\n')
    assert load_settings(str(cfg), {**base, "OSIS_CONTEXT": "geomind"}).agent.default_context == "filed"
    env = {**base, "OSIS_CONTEXT": "geomind", "HERO_AGENT_AGENT__DEFAULT_CONTEXT": "env"}
    assert load_settings(str(cfg), env).agent.default_context == "env"
    assert load_settings(None, env).agent.default_context == "env"
    with pytest.raises(ConfigError) as info:
        load_settings(None, {**base, "OSIS_CONTEXT": "Geo Mind"})
    assert info.value.key == "agent.default_context" and "OSIS_CONTEXT" in info.value.reason


def test_conventional_variables(home: Path) -> None:
    base = {"HOME": str(home)}
    s = load_settings(None, {**base, "TELEGRAM_BOT_TOKEN": "123:abc", "OSIS_CONTEXT": "team"})
    assert s.telegram.token == "123:abc" and s.telegram.enabled is False
    assert s.store.context == "team"
    # OSIS_URL points at a server: the engine follows unless configured explicitly
    s = load_settings(None, {**base, "OSIS_URL": "http://127.0.0.1:9999/hero_osis"})
    assert (s.store.engine, s.store.url) == ("osis", "http://127.0.0.1:9999/hero_osis")
    cfg = write(home / "c.toml", '[store]\nengine = "embedded"\n')
    s = load_settings(str(cfg), {**base, "OSIS_URL": "http://127.0.0.1:9999/hero_osis"})
    assert (s.store.engine, s.store.url) == ("embedded", "http://127.0.0.1:9999/hero_osis")
    # empty conventional variables count as unset
    assert load_settings(None, {**base, "OPENAI_API_KEY": ""}).llm.api_key == ""


def test_anthropic_provider_takes_its_own_key_and_defaults(home: Path) -> None:
    env = {"HOME": str(home), "OPENAI_API_KEY": "oa-key", "ANTHROPIC_API_KEY": "an-key"}
    assert load_settings(None, env).llm.api_key == "oa-key"
    s = load_settings(None, {**env, "HERO_AGENT_LLM__PROVIDER": "anthropic"})
    assert (s.llm.provider, s.llm.api_key, s.llm.base_url) == ("anthropic", "an-key", ANTHROPIC_BASE_URL)
    assert s.llm.model.startswith("claude")
    cfg = write(home / "c.toml", '[llm]\nprovider = "anthropic"\nmodel = "claude-x"\nbase_url = "http://x"\n')
    s = load_settings(str(cfg), env)
    assert (s.llm.model, s.llm.base_url, s.llm.api_key) == ("claude-x", "http://x", "an-key")


def test_anthropic_key_alone_selects_anthropic(home: Path) -> None:
    s = load_settings(None, {"HOME": str(home), "ANTHROPIC_API_KEY": "an-key"})
    assert (s.llm.provider, s.llm.api_key, s.llm.base_url) == ("anthropic", "an-key", ANTHROPIC_BASE_URL)
    # both keys: the default provider stays; a provider named in the file or environment wins
    both = {"HOME": str(home), "ANTHROPIC_API_KEY": "an-key", "OPENAI_API_KEY": "oa-key"}
    assert load_settings(None, both).llm.provider == "openai"
    cfg = write(home / "o.toml", '[llm]\nprovider = "openai"\n')
    named = load_settings(str(cfg), {"HOME": str(home), "ANTHROPIC_API_KEY": "an-key"})
    assert (named.llm.provider, named.llm.api_key) == ("openai", "")
    env_named = {"HOME": str(home), "ANTHROPIC_API_KEY": "an-key", "HERO_AGENT_LLM__PROVIDER": "openai"}
    assert load_settings(None, env_named).llm.provider == "openai"


# --- file validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[web]\nprot = 1\n", "web.prot", "unknown key"),
        ("[webb]\nport = 1\n", "webb", "unknown section"),
        ('[web]\nport = "80"\n', "web.port", "must be an integer"),
        ("[web]\nport = 0\n", "web.port", "must be 1-65535"),
        ("[llm]\nrequest_timeout_s = 0\n", "llm.request_timeout_s", "must be positive"),
        ("[llm]\nmax_retries = -1\n", "llm.max_retries", "must not be negative"),
        ("[agent]\nmax_tool_iterations = 0\n", "agent.max_tool_iterations", "at least 1"),
        ('[llm]\nprovider = "gemini"\n', "llm.provider", "must be one of openai, anthropic"),
        ('[store]\nengine = "redis"\n', "store.engine", "must be one of embedded, osis"),
        ('[telegram]\nmode = "push"\n', "telegram.mode", "polling, webhook"),
        ('[logging]\nlevel = "loud"\n', "logging.level", "must be one of"),
        ('[logging]\nformat = "xml"\n', "logging.format", "must be one of"),
        ('[agent]\ndefault_context = "Bad Name"\n', "agent.default_context", "invalid context name"),
        ('[store]\ncontext = "-x"\n', "store.context", "invalid context name"),
        ('[store]\nengine = "osis"\n', "store.url", "required"),
        ('[store]\nengine = "postgres"\nurl = "http://db"\n', "store.url", "postgresql://"),
        ("[web]\nenabled = true\nport = 1.5\n", "web.port", "must be an integer"),
        ('[llm]\nfallback_models = "a"\n', "llm.fallback_models", "must be a list"),
        ('[web]\nhost = "0.0.0.0"\n', "web.host", "not a loopback address"),
        ("[telegram]\nenabled = true\n", "telegram.token", "required"),
        (
            "[users.alice]\ntelegram_ids = [1]\n[users.bob]\ntelegram_ids = [1]\n",
            "users.bob.telegram_ids",
            "already",
        ),
        ('[users.alice]\nemail = "a@b"\n', "users.alice.email", "unknown key"),
        ("[[tools.mcp_servers]]\ncommand = 'x'\n", "tools.mcp_servers[0].name", "required"),
        ("[[tools.mcp_servers]]\nname = 'a'\n", "tools.mcp_servers[0].command", "required"),
        (
            "[[tools.mcp_servers]]\nname='a'\ncommand='x'\ntransport='ws'\n",
            "tools.mcp_servers[0].transport",
            "one of",
        ),
        ("[tools.mcp_servers.fs]\ncommand = 'x'\nbogus = 1\n", "tools.mcp_servers.fs.bogus", "unknown key"),
        ("[web]\ntokens = ['a']\n", "web.tokens", "must be a table"),
        ("llm = 3\n", "llm", "must be a table"),
        ("[telegram]\nwebhook_port = 70000\n", "telegram.webhook_port", "1-65535"),
        ("[telegram]\nglobal_rate_per_s = 0\n", "telegram.global_rate_per_s", "must be positive"),
        ("[tools]\nhttp_allow_cidrs = ['10.0.0.0/33']\n", "tools.http_allow_cidrs[0]", "not an IP network"),
    ],
)
def test_file_errors_carry_the_key_path(home: Path, text: str, key: str, reason: str) -> None:
    err = error_of(text, home)
    assert err.key == key
    assert reason in err.reason
    assert str(err).startswith(f"{key}: ")


def test_non_loopback_web_is_fine_with_tokens_or_disabled(home: Path) -> None:
    s = load_settings(
        str(write(home / "a.toml", '[web]\nhost = "0.0.0.0"\ntokens = { "t0ken" = "alice" }\n')), {}
    )
    assert s.web.tokens == (("t0ken", "alice"),)
    s = load_settings(str(write(home / "b.toml", '[web]\nhost = "0.0.0.0"\nenabled = false\n')), {})
    assert s.web.host == "0.0.0.0"
    s = load_settings(str(write(home / "c.toml", '[web]\nhost = "::1"\n')), {})
    assert s.web.host == "::1"


def test_full_file_round_trip(home: Path) -> None:
    text = """
[agent]
default_context = "work"
turn_deadline_s = 30
[llm]
model = "m"
fallback_models = ["m2"]
[store]
path = "~/data"
[web]
tokens = { "secret-token-1" = "alice" }
[telegram]
enabled = true
token = "123:abc"
allowed_users = [5]
[tools]
http_fetch = false
[[tools.mcp_servers]]
name = "fs"
command = "mcp-fs"
args = ["--root", "/tmp"]
env = { FS_KEY = "k" }
[[tools.mcp_servers]]
name = "remote"
transport = "http"
url = "http://127.0.0.1:1/mcp"
[users.alice]
telegram_ids = [5]
"""
    s = load_settings(str(write(home / "c.toml", text)), {"HOME": str(home)})
    assert s.agent.default_context == "work" and s.agent.turn_deadline_s == 30.0
    assert s.store.path == Path.home() / "data"
    assert s.user_for_token("secret-token-1") == "alice"
    assert [m.name for m in s.tools.mcp_servers] == ["fs", "remote"]
    assert s.tools.mcp_servers[0].args == ("--root", "/tmp")
    assert s.tools.http_fetch is False
    assert s.user_for_telegram_id(5) == "alice"


def test_secret_values_never_appear_in_errors(home: Path) -> None:
    secret = "sk-DONOTLEAK-1234567890"
    cases = [
        (f'[llm]\napi_key = ["{secret}"]\n', {}),
        (f'[[tools.mcp_servers]]\nname = "a"\ncommand = "x"\nenv = {{ K = ["{secret}"] }}\n', {}),
        (f'[web]\ntokens = {{ "{secret}" = 5 }}\n', {}),
        ("", {"HERO_AGENT_WEB__TOKENS": f"{secret}"}),
        ("", {"HERO_AGENT_WEB__TOKENS": f'{{"{secret}": '}),
        ("", {"HERO_AGENT_LLM__API_KEY": secret, "HERO_AGENT_LLM__PROVIDER": "nope"}),
    ]
    for text, env in cases:
        err = error_of(text, home, **env)
        assert secret not in str(err), str(err)
        assert secret not in repr(err.args)


def test_settings_repr_hides_secrets(home: Path) -> None:
    s = load_settings(None, {"HOME": str(home), "OPENAI_API_KEY": "sk-DONOTLEAK-1234567890"})
    assert "DONOTLEAK" not in repr(s)
