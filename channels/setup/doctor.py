"""``hero-agent doctor``: every check that can explain a failing set-up, one line each, with its fix.

Checks, in order, each on its own cause (a check that depends on an earlier failed one is skipped,
not failed again)::

    config     the file parses and validates              (fix: the key and the reason)
    provider   the server answers at llm.base_url
    key        the server accepts the key                 (skipped: provider unreachable)
    model      llm.model is one the server offers         (skipped: key refused)
    telegram   the bot token works (getMe) and the bot's name, when Telegram is enabled or a token is set
    store      the engine opens, and a probe value can be written and deleted
    web port   [web] host:port can be bound (or a running hero-agent already answers there)
    mcp NAME   each MCP server starts and lists its tools

The exit status is 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import httpx

from channels.serving import listening_socket
from channels.setup.probes import Finding, model_finding, probe_bot, probe_provider
from config.redact import url_without_secrets
from store import Scope, StoreError

if TYPE_CHECKING:
    from config import ConfigError, Settings

OK, FAIL, SKIP = "ok", "FAIL", "skip"
#: where the store probe writes (and deletes) its one value
PROBE_USER = "hero-agent-doctor"
PROBE_KEY = "doctor.probe"
STORE_DEADLINE_S = 20.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _from(name: str, finding: Finding) -> Check:
    return Check(name, OK if finding.ok else FAIL, finding.detail, finding.fix)


def config_checks(settings: Settings) -> Check:
    return Check("config", OK, f"{settings.source or 'no file: built-in defaults'} is valid")


def config_failure(exc: ConfigError) -> list[Check]:
    """A configuration that does not load: that is the one finding; nothing else can be checked."""
    fix = f"edit {exc.key} in the config file (`hero-agent init` rewrites it), then run doctor again"
    if exc.key.startswith(("--config", "HERO_AGENT_CONFIG")):
        fix = "point --config / $HERO_AGENT_CONFIG at an existing file, or run `hero-agent init`"
    return [Check("config", FAIL, str(exc), fix)]


async def provider_checks(settings: Settings) -> list[Check]:
    report = await probe_provider(settings.llm)
    if report.reachable is None:
        checks = [Check("provider", SKIP, f"{settings.llm.base_url} not contacted without a key")]
    else:
        checks = [_from("provider", report.reachable)]
    if report.key is None:
        return [*checks, Check("key", SKIP, "the provider cannot be reached"), Check("model", SKIP, "")]
    checks.append(_from("key", report.key))
    if not report.key.ok:
        return [*checks, Check("model", SKIP, "needs an accepted key")]
    return [*checks, _from("model", model_finding(settings.llm.model, report.models))]


async def telegram_check(settings: Settings) -> Check:
    tg = settings.telegram
    if not tg.enabled and not tg.token:
        return Check("telegram", SKIP, "disabled")
    found = await probe_bot(tg, tg.token)
    if found.ok and not tg.enabled:
        return Check("telegram", OK, f"{found.detail}, but [telegram] enabled = false")
    return _from("telegram", found)


async def store_check(settings: Settings) -> Check:
    from store import open_store  # noqa: PLC0415 (loads the engines)

    engine = settings.store.engine
    where = str(settings.store.path) if engine == "embedded" else url_without_secrets(settings.store.url)
    scope = Scope(settings.agent.default_context, PROBE_USER)
    try:
        with anyio.fail_after(STORE_DEADLINE_S):
            async with open_store(settings) as store:
                await store.state.set(scope, PROBE_KEY, "ok")
                await store.state.delete(scope, PROBE_KEY)
    except TimeoutError:
        return Check("store", FAIL, f"{engine} at {where}: no answer", _store_fix(engine))
    except (StoreError, OSError) as exc:
        return Check("store", FAIL, f"{engine} at {where}: {exc}", _store_fix(engine))
    return Check("store", OK, f"{engine} at {where} (writable)")


def _store_fix(engine: str) -> str:
    if engine == "embedded":
        return "make store.path a writable directory (or set HERO_AGENT_DATA_DIR)"
    return "start the OSIS server at store.url (e.g. `hero-agent osis serve`) or fix store.url/secret"


async def web_port_check(settings: Settings) -> Check:
    web = settings.web
    if not web.enabled:
        return Check("web port", SKIP, "the web channel is disabled")
    where = f"{web.host}:{web.port}"
    try:
        listening_socket(web.host, web.port).close()
    except OSError as exc:
        if await _hero_agent_answers(web.host, web.port):
            return Check("web port", OK, f"{where} is served by a running hero-agent")
        return Check(
            "web port",
            FAIL,
            f"cannot listen on {where}: {exc.strerror or exc}",
            "stop the program using it, or set [web] port (HERO_AGENT_WEB__PORT)",
        )
    return Check("web port", OK, f"{where} is free")


async def _hero_agent_answers(host: str, port: int) -> bool:
    shown = f"[{host}]" if ":" in host else host
    try:
        async with httpx.AsyncClient(timeout=3.0) as client:
            resp = await client.get(f"http://{shown}:{port}/healthz")
        return resp.status_code == 200 and resp.json().get("status") == "ok"
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


async def mcp_checks(settings: Settings) -> list[Check]:
    from agent.tools.mcp_client import MCPStartError, probe_server  # noqa: PLC0415 (loads the SDK)

    checks: list[Check] = []
    # a server's own stderr is not the report; opening /dev/null does not block
    with open(os.devnull, "w", encoding="utf-8") as quiet:  # noqa: ASYNC230
        for server in settings.tools.mcp_servers:
            name = f"mcp {server.name}"
            try:
                tools = await probe_server(server, quiet)
            except MCPStartError as exc:
                target = server.url if server.transport == "http" else server.command
                fix = f"check tools.mcp_servers {server.name!r}: {target!r} must start and speak MCP"
                checks.append(Check(name, FAIL, str(exc), fix))
                continue
            checks.append(Check(name, OK, f"started, {tools} tools"))
    return checks


async def run_checks(settings: Settings) -> list[Check]:
    """Every check of a configuration that loaded."""
    checks = [config_checks(settings)]
    checks += await provider_checks(settings)
    checks.append(await telegram_check(settings))
    checks.append(await store_check(settings))
    checks.append(await web_port_check(settings))
    checks += await mcp_checks(settings)
    return checks


def render(checks: list[Check]) -> str:
    """The report: one line per check, the fix of a failed one on the line below it."""
    width = max(len(c.name) for c in checks)
    lines = []
    for check in checks:
        lines.append(f"{check.status:<4}  {check.name:<{width}}  {check.detail}".rstrip())
        if check.status == FAIL and check.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {check.fix}")
    failed = sum(c.status == FAIL for c in checks)
    lines.append("all checks passed" if not failed else f"{failed} problem{'s' if failed > 1 else ''} found")
    return "\n".join(lines) + "\n"
