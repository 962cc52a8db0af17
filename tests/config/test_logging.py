"""structlog + stdlib routing, JSON and console output, and secret redaction in log lines."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import os
import re
import threading
from datetime import UTC, datetime

import pytest
import structlog

from config.logging import MASK, configure_logging, redact_text
from config.settings import LoggingSettings

BOT_TOKEN = "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_httpx_request_line_with_bot_token_is_redacted() -> None:
    buf = io.StringIO()
    configure_logging(LoggingSettings(level="debug"), stream=buf, force_json=True)
    url = f"https://api.telegram.org/bot{BOT_TOKEN}/getUpdates"
    logging.getLogger("httpx").info('HTTP Request: %s %s "%s"', "POST", url, "HTTP/1.1 200 OK")
    out = buf.getvalue()
    assert BOT_TOKEN not in out
    [record] = lines(buf)
    assert record["logger"] == "httpx"
    assert record["level"] == "info"
    assert (
        record["event"]
        == f'HTTP Request: POST https://api.telegram.org/bot{MASK}/getUpdates "HTTP/1.1 200 OK"'
    )


def test_structlog_events_are_json_lines_with_secret_keys_masked() -> None:
    buf = io.StringIO()
    configure_logging(
        LoggingSettings(level="info", format="json"), stream=buf, secrets=["literal-secret-value"]
    )
    log = structlog.get_logger("hero.test")
    log.info(
        "provider.request",
        api_key="sk-abc",
        headers={"Authorization": "Bearer abc.def", "Accept": "json"},
        note="the key literal-secret-value leaked",
        auth_line="Authorization: Bearer eyJhbGciOi.xyz",
        prompt_tokens=12,
    )
    log.debug("hidden.below.level")
    [record] = lines(buf)
    assert record["event"] == "provider.request"
    assert record["level"] == "info"
    assert "timestamp" in record
    assert record["api_key"] == MASK
    assert record["headers"] == {"Authorization": MASK, "Accept": "json"}
    assert record["note"] == f"the key {MASK} leaked"
    assert record["auth_line"] == f"Authorization: Bearer {MASK}"
    assert record["prompt_tokens"] == 12


def test_exceptions_are_rendered_and_redacted() -> None:
    buf = io.StringIO()
    configure_logging(LoggingSettings(level="info"), stream=buf, force_json=True)
    try:
        raise RuntimeError(f"call to /bot{BOT_TOKEN}/sendMessage failed")
    except RuntimeError:
        structlog.get_logger().exception("telegram.failed")
    [record] = lines(buf)
    assert "RuntimeError" in str(record["exception"])
    assert BOT_TOKEN not in buf.getvalue()


def test_console_format_is_readable_not_json() -> None:
    buf = io.StringIO()
    configure_logging(LoggingSettings(level="warning", format="console"), stream=buf)
    structlog.get_logger().warning("store.slow", duration_ms=12)
    structlog.get_logger().info("not.shown")
    out = buf.getvalue()
    assert "store.slow" in out and "duration_ms=12" in out
    assert "not.shown" not in out
    assert not out.lstrip().startswith("{")


def test_auto_format_is_json_when_not_a_terminal() -> None:
    buf = io.StringIO()
    configure_logging(LoggingSettings(level="info", format="auto"), stream=buf)
    logging.getLogger("uvicorn.error").warning("Started server process [%d]", 42)
    [record] = lines(buf)
    assert record["event"] == "Started server process [42]"


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(LoggingSettings(level="info"), stream=first, force_json=True)
    configure_logging(LoggingSettings(level="info"), stream=second, force_json=True)
    structlog.get_logger().info("once")
    assert first.getvalue() == ""
    assert [r["event"] for r in lines(second)] == ["once"]


def test_httpx_request_chatter_is_quiet_unless_debugging() -> None:
    buf = io.StringIO()
    configure_logging(LoggingSettings(level="info"), stream=buf, force_json=True)
    logging.getLogger("httpx").info("HTTP Request: GET http://x")
    logging.getLogger("httpx").warning("retrying")
    assert [r["event"] for r in lines(buf)] == ["retrying"]


def test_redact_text_patterns() -> None:
    assert redact_text(f"token {BOT_TOKEN} here") == f"token {MASK} here"
    assert redact_text("GET /x?api_key=abc123&q=1") == f"GET /x?api_key={MASK}&q=1"
    assert redact_text("key sk-proj-ABCDEFGHIJKLMNOPQRST") == f"key {MASK}"
    assert redact_text("plain words stay") == "plain words stay"


def test_redaction_after_the_quick_scan_still_masks_every_pattern_and_key() -> None:
    """One scan decides whether a string needs the substitutions; the verdict on a key name is
    remembered: neither lets a secret through (any case, any event, the same key again)."""
    assert redact_text("auth: BEARER abc.def-123") == f"auth: BEARER {MASK}"
    assert redact_text("x Basic dXNlcjpwYXNz") == f"x Basic {MASK}"
    assert redact_text("Received Session ID: 0f1e2d3c4b5a") == f"Received Session ID: {MASK}"
    assert redact_text("/x?TOKEN=abc") == f"/x?TOKEN={MASK}"
    assert redact_text("turn 0123456789abcdef0123456789abcdef done") == (
        "turn 0123456789abcdef0123456789abcdef done"
    )
    buf = io.StringIO()
    configure_logging(LoggingSettings(level="info", format="json"), stream=buf, secrets=["LITERAL-SECRET-1"])
    log = structlog.get_logger("t")
    for value in ("first-secret-value", "second-secret-value"):
        log.info("e", api_key=value, note="has LITERAL-SECRET-1 inside", prompt_tokens=5)
    events = lines(buf)
    assert [e["api_key"] for e in events] == [MASK, MASK]
    assert [e["note"] for e in events] == [f"has {MASK} inside"] * 2
    assert [e["prompt_tokens"] for e in events] == [5, 5]


# -- the direct path of our events (no stdlib record): the exact lines, and what a line never breaks --

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")


def only_line(buf: io.StringIO) -> tuple[str, str]:
    """The one line written and its timestamp (checked for its format: the rest is compared exactly)."""
    [line] = buf.getvalue().splitlines()
    stamp = str(json.loads(line)["timestamp"])
    assert TIMESTAMP.fullmatch(stamp)
    return line, stamp


def test_an_event_with_secrets_is_this_exact_line() -> None:
    buf = io.StringIO()
    configure_logging(
        LoggingSettings(level="info", format="json"), stream=buf, secrets=["literal-secret-value"]
    )
    with structlog.contextvars.bound_contextvars(conversation="c-1"):
        structlog.get_logger("hero.test").warning(
            "provider.retry",
            api_key="sk-abc",
            detail="Authorization: Bearer abc.def and literal-secret-value",
            headers={"Cookie": "x", "Accept": "json"},
            attempt=2,
            delay_s=0.5,
            total_tokens=7,
        )
    line, stamp = only_line(buf)
    assert line == (
        '{"api_key":"***","detail":"Authorization: Bearer *** and ***",'
        '"headers":{"Cookie":"***","Accept":"json"},"attempt":2,"delay_s":0.5,"total_tokens":7,'
        '"event":"provider.retry","conversation":"c-1","level":"warning","logger":"hero.test",'
        f'"timestamp":"{stamp}"}}'
    )


def test_a_library_record_is_this_exact_line() -> None:
    buf = io.StringIO()
    configure_logging(LoggingSettings(level="info"), stream=buf, force_json=True)
    url = f"https://api.telegram.org/bot{BOT_TOKEN}/getMe"
    logging.getLogger("telegram.ext").error("request to %s failed", url, extra={"attempt": 3})
    line, stamp = only_line(buf)
    assert line == (
        f'{{"event":"request to https://api.telegram.org/bot{MASK}/getMe failed","level":"error",'
        f'"logger":"telegram.ext","timestamp":"{stamp}","attempt":3}}'
    )


def test_the_event_logger_is_the_calling_module_unless_named() -> None:
    buf = io.StringIO()
    configure_logging(LoggingSettings(level="info"), stream=buf, force_json=True)
    structlog.get_logger().info("unnamed")
    structlog.get_logger("hero.web").info("named")
    assert [(r["event"], r["logger"]) for r in lines(buf)] == [
        ("unnamed", __name__),
        ("named", "hero.web"),
    ]


def test_hidden_events_and_levels_write_nothing() -> None:
    buf = io.StringIO()
    configure_logging(
        LoggingSettings(level="warning"), stream=buf, force_json=True, hidden_events=["ask.failed"]
    )
    log = structlog.get_logger()
    log.error("ask.failed", error="shown to the user already")
    log.info("below.level")
    log.log(logging.INFO, "below.level.too")
    log.error("shown", n=1)
    log.log(logging.ERROR, "shown.too")
    assert [r["event"] for r in lines(buf)] == ["shown", "shown.too"]
    assert not log.is_enabled_for(logging.INFO) and log.is_enabled_for(logging.WARNING)


def test_a_reconfiguration_applies_to_a_logger_cached_before_it() -> None:
    """The daemon caches loggers on first use; ``init`` and ``doctor`` reconfigure (a level, hidden
    events) and ``chat`` moves the stream after ``main`` configured: a cached logger follows."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging(LoggingSettings(level="info"), stream=first, force_json=True)
    cached = structlog.wrap_logger(None, cache_logger_on_first_use=True, logger_factory_args=("hero.cached",))
    cached.info("to.first")
    configure_logging(
        LoggingSettings(level="warning", format="console"), stream=second, hidden_events=["hidden"]
    )
    cached.info("below.level")
    cached.warning("hidden")
    cached.warning("to.second", n=1)
    assert [r["event"] for r in lines(first)] == ["to.first"]
    out = second.getvalue()
    assert "to.second" in out and "n=1" in out and "[hero.cached]" in out
    assert "below.level" not in out and "hidden" not in out


def test_changed_secrets_apply_to_a_string_seen_before() -> None:
    """The redactor remembers the masked form of short strings; new secrets forget it."""
    buf = io.StringIO()
    configure_logging(LoggingSettings(level="info"), stream=buf, force_json=True)
    structlog.get_logger().info("e", note="has SECRET-VALUE-2 inside")
    configure_logging(LoggingSettings(level="info"), stream=buf, force_json=True, secrets=["SECRET-VALUE-2"])
    structlog.get_logger().info("e", note="has SECRET-VALUE-2 inside")
    assert [r["note"] for r in lines(buf)] == ["has SECRET-VALUE-2 inside", f"has {MASK} inside"]


def test_lines_are_ascii_and_values_json_cannot_take_from_orjson_still_render() -> None:
    buf = io.StringIO()
    configure_logging(LoggingSettings(level="info"), stream=buf, force_json=True)

    class Thing:
        def __repr__(self) -> str:
            return "<Thing>"

    structlog.get_logger().info(
        "odd.values", text="héllo \u2028 wörld", big=2**70, thing=Thing(), counts={1: "one"}
    )
    structlog.get_logger().info("percent %s of %d", "a", 3)
    out = buf.getvalue()
    assert out.isascii()
    odd, percent = lines(buf)
    assert odd["text"] == "héllo \u2028 wörld" and odd["big"] == 2**70
    assert odd["thing"] == "<Thing>" and odd["counts"] == {"1": "one"}
    assert percent["event"] == "percent a of 3"


class _TornStream(io.StringIO):
    """Writes each string in two pieces, yielding the CPU in between: unserialised writers interleave."""

    def write(self, s: str) -> int:
        half = len(s) // 2
        super().write(s[:half])
        os.sched_yield()
        return super().write(s[half:])


def test_lines_of_many_threads_never_interleave() -> None:
    buf = _TornStream()
    configure_logging(LoggingSettings(level="info"), stream=buf, force_json=True)
    log = structlog.get_logger()
    library = logging.getLogger("uvicorn.error")

    def emit(n: int) -> None:
        for i in range(300):
            log.info("thread.event", thread=n, i=i, padding="x" * 200)
            library.warning("library record %d/%d", n, i)

    threads = [threading.Thread(target=emit, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    records = lines(buf)  # every line parses
    assert len(records) == 4 * 300 * 2
    assert {(r["thread"], r["i"]) for r in records if r["event"] == "thread.event"} == {
        (n, i) for n in range(4) for i in range(300)
    }


class _BrokenStream(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError("disk full")


def test_a_failing_stream_is_reported_never_raised(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(level="info"), stream=_BrokenStream(), force_json=True)
    structlog.get_logger().info("lost.event", token=BOT_TOKEN)
    logging.getLogger("uvicorn.error").warning("lost record")
    err = capsys.readouterr().err
    assert err.count("--- Logging error ---") == 2
    assert "OSError: disk full" in err
    assert BOT_TOKEN not in err


def test_an_unrenderable_event_is_reported_never_raised(capsys: pytest.CaptureFixture[str]) -> None:
    buf = io.StringIO()
    configure_logging(LoggingSettings(level="info"), stream=buf, force_json=True)

    class Unprintable:
        def __repr__(self) -> str:
            raise ValueError("no repr")

    structlog.get_logger().info("bad.value", value=Unprintable())
    structlog.get_logger().info("next.event")
    assert [r["event"] for r in lines(buf)] == ["next.event"]
    assert "ValueError: no repr" in capsys.readouterr().err


def test_context_variables_fields_and_timestamp() -> None:
    """Bound context variables join the event unless it sets the key; unbound ones leave; the
    timestamp is the UTC time of the event, as structlog's ISO stamper writes it."""
    buf = io.StringIO()
    configure_logging(LoggingSettings(level="info"), stream=buf, force_json=True)
    other = contextvars.ContextVar("not_structlog", default=0)
    token = other.set(1)  # another library's variable: never a field
    before = datetime.now(UTC)
    try:
        with structlog.contextvars.bound_contextvars(user="u-1", channel="web"):
            structlog.get_logger().info("first", channel="telegram")
            structlog.contextvars.unbind_contextvars("channel")
            structlog.get_logger().info("second")
    finally:
        other.reset(token)
    after = datetime.now(UTC)
    first, second = lines(buf)
    assert {k: first[k] for k in ("user", "channel")} == {"user": "u-1", "channel": "telegram"}
    assert "not_structlog" not in first
    assert second["user"] == "u-1" and "channel" not in second
    for record in (first, second):
        stamp = str(record["timestamp"])
        assert TIMESTAMP.fullmatch(stamp)
        assert before.replace(microsecond=0) <= datetime.fromisoformat(stamp) <= after
