"""Logging: structlog for our events, the stdlib root logger for the libraries', one output for both.

Our events (structlog) go straight from the caller to the output: one processor chain ending in a
renderer, then one locked write of the line, with no stdlib ``LogRecord`` in between (the detour cost
more than the rest of the event: a frame walk, two records, a formatter). Library records (httpx,
httpcore, uvicorn, telegram, mcp) keep their stdlib path: a root handler formats them with the same
fields, redaction and renderer, and writes through the same output, so lines of both never interleave.
Readable console lines on a terminal, JSON lines otherwise. A redaction step runs before rendering, so
no secret reaches a log line: values of keys that look secret are masked, and bot tokens / bearer
tokens / API keys are masked inside any string (httpx logs ``HTTP Request: POST
https://api.telegram.org/bot<TOKEN>/getUpdates``).

What a configuration can change (level, stream, format, hidden events, secrets) lives in one
:class:`_Output` that :func:`configure_logging` replaces: loggers cached on first use keep their
processor chain, and that chain reads the current output at every event.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterable, MutableMapping
from contextvars import ContextVar, copy_context
from typing import Any, TextIO

import orjson
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
#: how many strings (of at most ``_TEXT_MEMO_LEN`` characters) the redactor remembers the masked form
#: of: event names, channels, users, conversation and turn ids recur from one event to the next; a
#: full memo is emptied (at most about 1 MB, and a turn's few ids are learned again at once)
_TEXT_MEMO_MAX = 4096
_TEXT_MEMO_LEN = 128
#: keys the chain itself sets from known values (never a secret): the redactor skips them
_OWN_KEYS = frozenset({"level", "logger", "timestamp"})
_PLAIN, _SECRET, _SKIP = 0, 1, 2
#: values with nothing to mask (exact types: a subclass may render differently)
_UNMASKED_TYPES = frozenset({int, float, bool, type(None)})
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
        #: key name -> _PLAIN, _SECRET (names a secret) or _SKIP (the regex runs once per name)
        self._key_kinds: dict[str, int] = {}
        #: short string -> its masked form (the same string when there is nothing to mask)
        self._texts: dict[str, str] = {}
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # short values would mask ordinary words: only literal secrets of a useful length
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)
        self._texts = {}  # the masked forms depend on the secrets

    def text(self, value: str) -> str:
        texts = self._texts  # taken first: set_secrets swaps it after the secrets (threads)
        known = texts.get(value)
        if known is not None:
            return known
        masked = self._mask(value)
        if len(value) <= _TEXT_MEMO_LEN:
            if len(texts) >= _TEXT_MEMO_MAX:
                texts.clear()
            texts[value] = masked
        return masked

    def _mask(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        if _ANY_PATTERN.search(value) is None:
            return value
        for pattern, repl in _PATTERNS:
            value = pattern.sub(repl, value)
        return value

    def _names_secret(self, key: str) -> bool:
        return self._key_kind(key) is _SECRET

    def _key_kind(self, key: str) -> int:
        known = self._key_kinds.get(key)
        if known is None:
            if key.startswith("_") or key in _OWN_KEYS:  # private (structlog's own), or set by us
                known = _SKIP
            elif _SECRET_KEY.search(key) and key not in _NOT_SECRET_KEYS:
                known = _SECRET
            else:
                known = _PLAIN
            if len(self._key_kinds) < _KEY_MEMO_MAX:
                self._key_kinds[key] = known
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
        # on every event's path: the usual cases (a plain string seen before, a number) take two
        # dictionary look-ups; replacing values while iterating is fine (the keys stay the same)
        kinds, texts = self._key_kinds, self._texts
        for key, value in event_dict.items():
            kind = kinds.get(key)
            if kind is None:
                kind = self._key_kind(key)
            if kind is _SKIP or value.__class__ in _UNMASKED_TYPES:
                continue
            if value.__class__ is str and kind is _PLAIN:
                known = texts.get(value)
                event_dict[key] = self.text(value) if known is None else known
            else:
                event_dict[key] = self.value(key, value)
        return event_dict


_redactor = Redactor()


def redact_text(text: str) -> str:
    """Mask secrets in a free string (used for one-line error messages on stderr)."""
    return _redactor.text(text)


#: datetimes and dataclasses go to the fallback (their repr), as with ``json.dumps`` before
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def render_json(logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
    """The JSON renderer: one compact line, ASCII only (anything else escaped, as ``json.dumps``
    does, so a stream of any encoding takes it). orjson renders a typical event in a fraction of
    ``json.dumps``' time; what it refuses (integers beyond 64 bits, keys that are not strings) and
    lines with non-ASCII characters are rendered by ``json.dumps`` instead, in the same format."""
    try:
        line = orjson.dumps(event_dict, default=_json_fallback, option=_ORJSON_OPTIONS).decode()
        if line.isascii():
            return line
    except orjson.JSONEncodeError:
        pass
    return json.dumps(event_dict, default=_json_fallback, separators=(",", ":"))


def _json_fallback(value: Any) -> Any:
    """What neither JSON library knows: its ``__structlog__()`` if it has one, else its repr (as
    structlog's own JSON renderer)."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


class _Output:
    """Where lines go and what is written, as configured: the level, the renderer, the hidden events,
    the stream (``None``: whatever ``sys.stderr`` is at write time, as logging's last-resort handler,
    since it may be replaced after configuration, e.g. by pytest's capture). One lock serialises the
    writes of every thread (the store's worker thread logs too), our events' and library records'."""

    def __init__(
        self,
        level: int,
        renderer: Processor,
        stream: TextIO | None = None,
        hidden_events: Collection[str] = (),
    ) -> None:
        self.level = level
        self.renderer = renderer
        self.stream = stream
        self.hidden = frozenset(hidden_events)

    def write(self, line: str) -> None:
        """One line and a flush (a daemon's log must not lag behind it); a failing stream is reported
        on stderr like a stdlib handler's error, never raised into the code that logged."""
        stream = sys.stderr if self.stream is None else self.stream
        try:
            with _write_lock:
                stream.write(line + "\n")
                stream.flush()
        except Exception:  # logging must not break the caller
            _report_failure()


_write_lock = threading.RLock()


def _new_lock_in_child() -> None:
    """A child forked while another thread held the lock would wait for it forever (logging renews
    its handlers' locks the same way)."""
    global _write_lock  # noqa: PLW0603 - read at every write
    _write_lock = threading.RLock()


os.register_at_fork(after_in_child=_new_lock_in_child)
#: the configured output; before any configuration: everything, readable, to stderr
_output = _Output(logging.NOTSET, structlog.dev.ConsoleRenderer(colors=False))


def _report_failure() -> None:
    """What ``logging.Handler.handleError`` does: a traceback on stderr, unless that fails too."""
    if logging.raiseExceptions and sys.stderr is not None:
        try:
            sys.stderr.write("--- Logging error ---\n")
            traceback.print_exc(file=sys.stderr)
        except Exception:  # nowhere left to report it
            pass


def _finish_event(logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
    """The end of our events' chain: drop hidden events, then the line (the writer's method writes
    it). A failure is reported and drops the event, as a stdlib handler's would: a log call never
    raises."""
    output = _output
    if event_dict.get("event") in output.hidden:
        raise structlog.DropEvent
    try:
        return _render(logger, method, event_dict, output)
    except Exception:  # logging must not break the caller
        _report_failure()
        raise structlog.DropEvent from None


def _render(logger: WrappedLogger, method: str, event_dict: EventDict, output: _Output) -> str:
    """An event's line, our events' and library records' alike: the traceback rendered, then
    secrets masked, then the configured renderer."""
    event_dict = structlog.processors.format_exc_info(logger, method, event_dict)
    return str(output.renderer(logger, method, _redactor(logger, method, event_dict)))


class _EventWriter:
    """The logger our structlog events end in: a name (the event's ``logger`` field) and one method per
    level, each writing the rendered line to the current output."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def _write(self, line: str) -> None:
        _output.write(line)

    debug = info = warning = error = critical = msg = _write


def _event_writer(*args: Any) -> _EventWriter:
    """The logger factory: the name given to ``get_logger``, else the calling module's (as structlog's
    stdlib factory names them), found past structlog's frames and ours."""
    if args:
        return _EventWriter(str(args[0]))
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(_SKIPPED_MODULES):
        frame = frame.f_back
    return _EventWriter(str(frame.f_globals.get("__name__", "?")))


_SKIPPED_MODULES = ("structlog", __name__)


def _gate(level: int, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` when ``level`` is at or above the configured one, else nothing (below the level, a
    call costs one comparison: no event dict is built)."""

    def gated(self: Any, *args: Any, **kw: Any) -> Any:
        if level < _output.level:
            return None
        return method(self, *args, **kw)

    return gated


def _gate_async(level: int, method: Callable[..., Any]) -> Callable[..., Any]:
    async def gated(self: Any, *args: Any, **kw: Any) -> Any:
        if level < _output.level:
            return None
        return await method(self, *args, **kw)

    return gated


def _bound_logger_class() -> type:
    """structlog's native filtering logger, with the level read from the current output at every
    call instead of fixed at class creation: a reconfiguration applies to loggers cached before it."""
    base: Any = structlog.make_filtering_bound_logger(logging.NOTSET)
    methods: dict[str, Any] = {}
    for level, names in (
        (logging.DEBUG, ("debug",)),
        (logging.INFO, ("info", "msg")),
        (logging.WARNING, ("warning", "warn")),
        (logging.ERROR, ("error",)),
        (logging.CRITICAL, ("critical", "fatal")),
    ):
        for name in names:
            methods[name] = _gate(level, getattr(base, name))
            methods[f"a{name}"] = _gate_async(level, getattr(base, f"a{name}"))

    def log(self: Any, level: int, event: str, *args: Any, **kw: Any) -> Any:
        return None if level < _output.level else base.log(self, level, event, *args, **kw)

    async def alog(self: Any, level: int, event: str, *args: Any, **kw: Any) -> Any:
        return None if level < _output.level else await base.alog(self, level, event, *args, **kw)

    methods.update(
        log=log,
        alog=alog,
        is_enabled_for=lambda self, level: level >= _output.level,
        get_effective_level=lambda self: _output.level,
    )
    return type("HeroBoundLogger", (base,), methods)


_BoundLogger = _bound_logger_class()


def merge_contextvars(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """structlog's ``merge_contextvars`` (the values bound with ``bind_contextvars``, where the event
    does not set the key), with the verdict on each context variable remembered: the context of a
    task holds the variables of every library in it (asyncio, anyio, sniffio...), and structlog's
    own processor looks at every name, at every event."""
    keys = _CONTEXT_KEYS
    for var, value in copy_context().items():
        key = keys.get(var, _UNKNOWN)
        if key is _UNKNOWN:
            key = _context_key(var)
        if key is not None and value is not Ellipsis:  # Ellipsis: unbound
            event_dict.setdefault(key, value)
    return event_dict


def _context_key(var: ContextVar[Any]) -> str | None:
    name = var.name
    key = name[len(_BOUND_PREFIX) :] if name.startswith(_BOUND_PREFIX) else None
    if len(_CONTEXT_KEYS) < _KEY_MEMO_MAX:
        _CONTEXT_KEYS[var] = key
    return key


_BOUND_PREFIX = structlog.contextvars.STRUCTLOG_KEY_PREFIX
_UNKNOWN = ""  # not a key: bound keys come from keyword arguments
#: context variable -> the event key it holds (``None``: not one of structlog's)
_CONTEXT_KEYS: dict[ContextVar[Any], str | None] = {}


def add_timestamp(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """The ``timestamp`` field as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it
    (``2025-01-31T12:00:00.123456Z``, no fraction on a whole second), in a third of its time: the
    date and time of day are formatted once per second."""
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    second, prefix = _stamp_second
    if seconds != second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _set_stamp_second(seconds, prefix)
    micros = nanos // 1000
    event_dict["timestamp"] = f"{prefix}.{micros:06d}Z" if micros else f"{prefix}Z"
    return event_dict


def _set_stamp_second(seconds: int, prefix: str) -> None:
    global _stamp_second  # noqa: PLW0603 - one tuple, replaced whole (threads read it)
    _stamp_second = (seconds, prefix)


_stamp_second = (-1, "")
#: our events' chain; fixed, so that loggers cached on first use stay right after a reconfiguration
_EVENT_PROCESSORS: list[Processor] = [
    merge_contextvars,
    structlog.processors.add_log_level,
    structlog.stdlib.add_logger_name,
    add_timestamp,
    structlog.processors.StackInfoRenderer(additional_ignores=[__name__]),
    _finish_event,
]


class _RecordHandler(logging.Handler):
    """The root handler for library records: the fields of our events (the message as ``event``, the
    context variables, level, logger, timestamp), then the record's extra attributes, rendered and
    written through the same output. Straight from the record: no copy of it, no formatter."""

    def emit(self, record: logging.LogRecord) -> None:
        output = _output
        try:
            line = _render(None, record.levelname.lower(), _record_event(record), output)
        except Exception:  # logging must not break the caller (nor show the record's arguments)
            _report_failure()
            return
        output.write(line)


def _record_event(record: logging.LogRecord) -> EventDict:
    method = record.levelname.lower()
    event_dict: EventDict = {"event": record.getMessage()}
    if record.exc_info:
        event_dict["exc_info"] = record.exc_info
    if record.stack_info:
        event_dict["stack_info"] = record.stack_info
    event_dict = merge_contextvars(None, method, event_dict)
    event_dict = structlog.processors.add_log_level(None, method, event_dict)
    event_dict["logger"] = record.name
    event_dict = add_timestamp(None, method, event_dict)
    for key, value in record.__dict__.items():
        if key not in _RECORD_ATTRIBUTES:  # what the caller passed as ``extra``
            event_dict[key] = value
    return event_dict


#: a record's own attributes, and those a formatter adds to it (pytest's capture handler formats
#: records before ours): anything else came from the caller's ``extra``
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def child_setup() -> str:
    """This process's logging as a child process of ours is told it (``LEVEL:json`` or
    ``LEVEL:console``), for :func:`configure_child`: the embedded store's writer process logs as its
    daemon does."""
    out = _output
    level = logging.getLevelName(out.level) if out.level else "NOTSET"
    return f"{level}:{'json' if out.renderer is render_json else 'console'}"


def configure_child(setup: str, role: str) -> None:
    """Configure a child process's logging from its parent's :func:`child_setup`, its lines bound to
    ``role`` (they go to the stderr it inherited). A setup it cannot read keeps the defaults."""
    level, _, fmt = setup.partition(":")
    if level.upper() not in logging.getLevelNamesMapping() or fmt not in ("json", "console"):
        return
    configure_logging(LoggingSettings(level=level.lower(), format=fmt))
    structlog.contextvars.bind_contextvars(process=role)


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
    global _output  # noqa: PLW0603 - the one output every cached logger reads
    _redactor.set_secrets(secrets)
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    target = sys.stderr if stream is None else stream
    if force_json is None:
        use_json = settings.format == "json" or (settings.format == "auto" and not _isatty(target))
    else:
        use_json = force_json
    renderer: Processor = render_json if use_json else structlog.dev.ConsoleRenderer(colors=_isatty(target))
    _output = _Output(level, renderer, stream, hidden_events)
    handler = _RecordHandler()
    handler.set_name("hero-agent")
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
        processors=_EVENT_PROCESSORS,
        logger_factory=_event_writer,
        wrapper_class=_BoundLogger,
        # under pytest, caching would pin loggers to the first configuration (and defeat capture_logs)
        cache_logger_on_first_use="pytest" not in sys.modules,
    )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def reset_logging() -> None:
    """Undo :func:`configure_logging` (tests, and embedding applications that own logging). Loggers
    cached before it keep our chain and write to stderr, readable, at every level."""
    global _output  # noqa: PLW0603 - the one output every cached logger reads
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "hero-agent":
            root.removeHandler(handler)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = True
    _output = _Output(logging.NOTSET, structlog.dev.ConsoleRenderer(colors=False))
    structlog.reset_defaults()
