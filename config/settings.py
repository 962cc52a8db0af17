"""Typed, immutable configuration values (SPEC section 4).

Every section of the TOML file is one frozen dataclass. Defaults here are the documented defaults;
:mod:`config.loader` builds these from file + environment and validates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SYSTEM_PROMPT = (
    "You are hero-agent, a helpful, precise assistant. Use tools when they help; say so when you are unsure."
)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    default_context: str = "default"
    max_tool_iterations: int = 8
    turn_deadline_s: float = 300.0
    max_message_chars: int = 32_000
    #: largest tool result (characters) handed back to the model
    max_tool_result_chars: int = 16_000
    tool_timeout_s: float = 60.0
    #: how long a conversation lock is held before another process may take it over
    turn_lock_ttl_s: float = 600.0
    history_limit: int = 200
    #: largest image (bytes) a message may carry; stored as an attachment (at most 10 MiB)
    max_attachment_bytes: int = 5 * 1024 * 1024
    #: images one message may carry
    max_images_per_message: int = 4
    #: largest voice message or audio upload (bytes) sent for transcription
    max_audio_bytes: int = 20 * 1024 * 1024
    #: longest voice message (seconds), as Telegram or the transcription reports it (the daemon has
    #: no audio decoder)
    max_audio_seconds: int = 600
    #: a turn whose opening would queue behind other store calls (a burst on the embedded store)
    #: sends its request while the opening waits, and shows nothing before the opening confirmed it
    #: (docs/agent.md, "The early request")
    early_request: bool = True


@dataclass(frozen=True, slots=True)
class LLMSettings:
    provider: str = "openai"  # "openai" | "anthropic"
    base_url: str = "https://api.openai.com/v1"
    api_key: str = field(default="", repr=False)  # secret
    model: str = "gpt-4o-mini"
    fallback_models: tuple[str, ...] = ()
    context_window: int = 128_000
    max_output_tokens: int = 4096
    temperature: float | None = None
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 120.0
    #: longest silence allowed inside a stream before it counts as dropped
    stream_idle_timeout_s: float = 60.0
    max_retries: int = 3
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 30.0
    #: speech to text (``POST {transcription_base_url}/audio/transcriptions``); "" turns voice off
    transcription_model: str = ""
    #: "" : ``base_url`` (an OpenAI-compatible provider); a local Whisper server can be named here
    transcription_base_url: str = ""
    #: "" : ``api_key`` when the transcription server is the provider's
    transcription_api_key: str = field(default="", repr=False)  # secret
    #: spoken replies (``POST {transcription_base_url}/audio/speech``, opus); "" turns them off
    speech_model: str = ""
    speech_voice: str = "alloy"
    #: does the model accept images: "auto" (send them; a refusal becomes a clear message and the
    #: model is treated as text-only until restart), "true", "false" (images are refused)
    vision: str = "auto"
    audio_timeout_s: float = 120.0


@dataclass(frozen=True, slots=True)
class MemorySettings:
    enabled: bool = True
    recall_limit: int = 8
    extraction_model: str = ""  # empty: the main model
    debounce_s: float = 2.0
    max_memories_shown: int = 100


@dataclass(frozen=True, slots=True)
class StoreSettings:
    engine: str = "embedded"  # "embedded" | "osis" | "postgres"
    path: Path = Path("~/.local/share/hero-agent")
    url: str = ""
    context: str = ""  # OSIS_CONTEXT: default context for the remote store
    #: the endpoint's path when ``url`` is a unix socket (``unix:///run/hero/osis.sock``); default
    #: ``/hero_osis_ai/rpc`` (a service behind the Hero router may answer at ``/rpc``)
    rpc_path: str = ""
    secret: str = field(default="", repr=False)  # secret
    timeout_s: float = 10.0
    retries: int = 2
    #: embedded engine: fsync every commit (SQLite synchronous=FULL), so an acknowledged write survives
    #: power loss too; false (synchronous=NORMAL) still survives kill -9 and never corrupts, but a power
    #: cut may drop the last commits. Appends then cost no fsync (see docs/store.md).
    fsync_commits: bool = True
    #: embedded engine: how long a write waits for another process's transaction before failing
    busy_timeout_s: float = 10.0
    #: embedded engine: who runs the SQLite connection: "thread" (a thread of this process),
    #: "process" (a writer process of its own, docs/store.md "The writer process"), or "auto": a
    #: writer process for the daemon (``serve``), a thread for every other command
    writer: str = "auto"


@dataclass(frozen=True, slots=True)
class WebSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8780
    #: bearer token -> user name (secrets: the keys)
    tokens: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    #: header carrying the user when behind a trusted proxy ("" disables)
    trusted_user_header: str = ""
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1_048_576
    shutdown_deadline_s: float = 10.0
    #: the one user of a page without tokens; "" (default): the OS user, the CLI's default user, so
    #: one person on one machine is one user on every channel
    local_user: str = ""
    #: the model name the OpenAI-compatible endpoint reports (``GET /v1/models``)
    api_model_name: str = "hero-agent"


@dataclass(frozen=True, slots=True)
class TelegramSettings:
    enabled: bool = False
    token: str = field(default="", repr=False)  # secret
    api_base_url: str = "https://api.telegram.org/bot"
    allowed_users: tuple[int, ...] = ()
    mode: str = "polling"  # "polling" | "webhook"
    webhook_url: str = ""
    webhook_path: str = "/telegram/webhook"
    webhook_secret: str = field(default="", repr=False)  # secret
    poll_timeout_s: int = 30
    edit_interval_s: float = 1.0
    #: where files are downloaded (``{file_base_url}{token}/{file_path}``); "" derives it from
    #: ``api_base_url`` (``.../bot`` -> ``.../file/bot``)
    file_base_url: str = ""
    #: answer a voice note with a voice note too (``sendVoice``), when ``[llm] speech_model`` is set
    voice_replies: bool = True
    #: how long the bot waits for more photos of an album (``media_group_id``) after the last one
    media_group_wait_s: float = 1.0
    #: webhook mode: where our own small HTTP server listens (a reverse proxy terminates TLS)
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8443
    #: turns of different chats that may run at once (turns of one chat always run in order)
    max_concurrent_turns: int = 32
    #: our own pacing of sendMessage/editMessageText over all chats (Telegram allows about 30/s)
    global_rate_per_s: float = 25.0
    #: first wait before the polling watchdog restarts polling (doubles up to 60 s)
    watchdog_backoff_s: float = 1.0
    #: how long ``stop`` lets queued and running turns finish before cancelling them
    shutdown_deadline_s: float = 10.0
    #: strangers get a pairing code the owner approves with ``hero-agent pair approve CODE``
    pairing: bool = True
    #: how long a pairing code stays valid
    pairing_code_ttl_s: float = 3600.0
    #: messages per Telegram user and hour a stranger is answered (with their code); more are ignored
    pairing_attempts_per_hour: int = 5


@dataclass(frozen=True, slots=True)
class MCPServerSettings:
    name: str
    #: "stdio" (command + args) or "http" (streamable HTTP url)
    transport: str = "stdio"
    command: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # values may be secrets
    url: str = ""
    #: extra HTTP headers for the "http" transport (e.g. Authorization; values are secrets)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    #: start-up deadline and per-request read timeout
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class ToolsSettings:
    memory: bool = True
    datetime: bool = True
    search_conversations: bool = True
    http_fetch: bool = True
    http_timeout_s: float = 15.0
    http_max_bytes: int = 2_000_000
    http_max_redirects: int = 5
    #: allow fetching loopback/private/link-local addresses (off by default: SSRF guard)
    http_allow_private: bool = False
    #: networks fetchable whatever their kind (e.g. ["10.1.2.0/24"] for one internal service);
    #: an explicit exception to the SSRF guard, also for addresses http_allow_private would refuse
    http_allow_cidrs: tuple[str, ...] = ()
    mcp_servers: tuple[MCPServerSettings, ...] = ()


@dataclass(frozen=True, slots=True)
class UserLink:
    name: str
    telegram_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = "info"
    #: "auto" (readable on a terminal, JSON otherwise), "json" or "console"
    format: str = "auto"


@dataclass(frozen=True, slots=True)
class Settings:
    agent: AgentSettings = field(default_factory=AgentSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    web: WebSettings = field(default_factory=WebSettings)
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    tools: ToolsSettings = field(default_factory=ToolsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    users: tuple[UserLink, ...] = ()
    #: where the settings came from (None: defaults only)
    source: Path | None = None
    #: the OS user running this process (the CLI's default user), found by the loader
    os_user: str = "local"

    @property
    def web_local_user(self) -> str:
        """The web page's user when no tokens are configured: ``[web] local_user``, else the OS user."""
        return self.web.local_user or self.os_user

    @property
    def models(self) -> tuple[str, ...]:
        """The configured models: ``llm.model`` then ``llm.fallback_models``, each once."""
        return tuple(dict.fromkeys((self.llm.model, *self.llm.fallback_models)))

    def model_for(self, chosen: str) -> str:
        """The model a conversation uses: its ``/model`` choice while that is still configured,
        else ``llm.model``."""
        return chosen if chosen and chosen in self.models else self.llm.model

    def user_for_telegram_id(self, telegram_id: int) -> str | None:
        """The linked canonical user for a Telegram id, if any ``[users.<name>]`` claims it."""
        for link in self.users:
            if telegram_id in link.telegram_ids:
                return link.name
        return None

    def user_for_token(self, token: str) -> str | None:
        for tok, user in self.web.tokens:
            if tok == token:
                return user
        return None
