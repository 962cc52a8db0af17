"""Logging: structlog configured once, with stdlib library loggers routed through it.

One stdlib root handler renders every record, ours (structlog) and the libraries' (httpx, httpcore,
uvicorn, telegram, mcp), with one processor chain: readable console output on a terminal, JSON lines
otherwise. A redaction processor runs last before rendering, so no secret reaches a log line: values of
keys that look secret are masked, and bot tokens / bearer tokens / API keys are masked inside any
string (httpx logs ``HTTP Request: POST https://api.telegram.org/bot<TOKEN>/getUpdates``).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Collection, Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from config.settings import LoggingSettings

MASK = "***"
#: ``logging.level`` values, quietest last
LEVEL_NAMES = ("debug", "info", "warning", "error", "critical")
_SECRET_KEY = re.compile(r"token|api_?key|secret|authorization|password|cookie", re.IGNORECASE)
# keys that contain a secret-looking word but hold numbers, not secrets
_NOT_SECRET_KEYS = frozenset(
    {"prompt_tokens", "completion_tokens", "max_tokens", "total_tokens", "tokens_used"}
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Telegram bot tokens, also inside /bot<TOKEN>/ URLs
    (re.compile(r"\d{5,}:[A-Za-z0-9_-]{30,}"), MASK),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + MASK),
    # OpenAI / Anthropic style keys
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), MASK),
    # secrets passed as query parameters
    (re.compile(r"(?i)([?&](?:api_?key|token|secret|key)=)[^&\s]+"), r"\1" + MASK),
    # MCP session ids (the SDK logs "Received session ID: ..."; the header is mcp-session-id)
    (re.compile(r"(?i)(session[ _-]?id\b[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._~+/=-]{6,}"), r"\1" + MASK),
)
#: one search that finds whatever any of the patterns could match (case-insensitive: a superset), so a
#: string with nothing to mask, nearly every one, costs one scan instead of one substitution per pattern
_ANY_PATTERN = re.compile(
    "|".join(f"(?:{p.pattern.removeprefix('(?i)')})" for p, _ in _PATTERNS), re.IGNORECASE
)
#: how many distinct key names the redactor remembers the verdict of (event fields are a small set)
_KEY_MEMO_MAX = 4096
LIBRARY_LOGGERS = (
    "httpx",
    "httpx2",  # the LLM providers' and the MCP SDK's HTTP client
    "httpcore",
    "httpcore2",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
    "telegram",
    "mcp",
)
#: libraries that log every request (or MCP session ids) at info: warnings only unless debugging
CHATTY_LOGGERS = frozenset({"httpx", "httpx2", "httpcore", "httpcore2", "mcp"})


class Redactor:
    """A structlog processor masking secrets; also knows the configured secrets' exact values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        #: key name -> it names a secret (the regex runs once per name, not once per event)
        self._secret_keys: dict[str, bool] = {}
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # short values would mask ordinary words: only literal secrets of a useful length
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        if _ANY_PATTERN.search(value) is None:
            return value
        for pattern, repl in _PATTERNS:
            value = pattern.sub(repl, value)
        return value

    def _names_secret(self, key: str) -> bool:
        known = self._secret_keys.get(key)
        if known is None:
            known = bool(_SECRET_KEY.search(key)) and key not in _NOT_SECRET_KEYS
            if len(self._secret_keys) < _KEY_MEMO_MAX:
                self._secret_keys[key] = known
        return known

    def value(self, key: str, value: Any) -> Any:
        if isinstance(value, str):
            if key and value and self._names_secret(key):
                return MASK
            return self.text(value)
        if isinstance(value, MutableMapping):
            return {k: self.value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value("", v) for v in value]
        return value

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        for key in list(event_dict):
            if key.startswith("_"):  # ProcessorFormatter's own record objects
                continue
            event_dict[key] = self.value(key, event_dict[key])
        return event_dict


_redactor = Redactor()


def redact_text(text: str) -> str:
    """Mask secrets in a free string (used for one-line error messages on stderr)."""
    return _redactor.text(text)


def configure_logging(
    settings: LoggingSettings,
    *,
    stream: TextIO | None = None,
    force_json: bool | None = None,
    secrets: Iterable[str] = (),
    hidden_events: Collection[str] = (),
) -> None:
    """(Re)configure structlog and the stdlib root logger. Calling it again replaces the setup.

    ``force_json`` overrides ``settings.format``; ``secrets`` are literal values (API keys, tokens)
    masked wherever they appear; ``hidden_events`` are event names not written at all (a command that
    shows those facts to the user itself, like ``ask``'s one error line, must not repeat them).
    """
    _redactor.set_secrets(secrets)
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    target = sys.stderr if stream is None else stream
    if force_json is None:
        use_json = settings.format == "json" or (settings.format == "auto" and not _isatty(target))
    else:
        use_json = force_json
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=_isatty(target))
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redactor,
            renderer,
        ],
    )
    handler = _CurrentStderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.set_name("hero-agent")
    if hidden_events:
        handler.addFilter(_HideEvents(hidden_events))
    root = logging.getLogger()
    for old in list(root.handlers):  # only ours: pytest's capture handlers must stay
        if old.get_name() == "hero-agent":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # no renderer of ours shows a record's thread, process or multiprocessing names: skip computing
    # them for every record (two getpid() calls and two lookups per event; the logging HOWTO's
    # "Optimization" section)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # library loggers propagate to the root handler; httpx/httpx2/httpcore log every request at
    # INFO/DEBUG and the MCP SDK its session ids: noise (and identifiers) unless we are debugging
    for name in LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
        chatty = name in CHATTY_LOGGERS and level > logging.DEBUG
        lib.setLevel(max(level, logging.WARNING) if chatty else logging.NOTSET)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # under pytest, caching would pin loggers to the first configuration (and defeat capture_logs)
        cache_logger_on_first_use="pytest" not in sys.modules,
    )


class _HideEvents(logging.Filter):
    """Drops our structlog events by name (their stdlib record carries the event dict as ``msg``)."""

    def __init__(self, names: Collection[str]) -> None:
        super().__init__()
        self.names = frozenset(names)

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, dict) and record.msg.get("event") in self.names)


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (it may be replaced after configuration,
    e.g. by pytest's capture), like logging's own last-resort handler."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def reset_logging() -> None:
    """Undo :func:`configure_logging` (tests, and embedding applications that own logging)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "hero-agent":
            root.removeHandler(handler)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = True
    structlog.reset_defaults()
