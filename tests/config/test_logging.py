"""structlog + stdlib routing, JSON and console output, and secret redaction in log lines."""

from __future__ import annotations

import io
import json
import logging

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
