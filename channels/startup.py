"""A start-up that talks: the daemon's facts (page URL, provider and model, channels, store), the
provider check at start, and the banner a person sees on a terminal.

``serve`` used to report ready with a wrong ``llm.base_url``; the first chat was what failed. Now the
provider is pinged once at start: when it cannot be reached or refuses the key, the daemon warns
(``daemon.provider_unreachable``, and a line in the banner) and keeps serving, since the provider may
come up later and the page, history and memories work without it. On a terminal the banner is printed
once every channel has started; off a terminal the same facts are fields of the ``daemon.ready`` log
event, where log collectors pick them up.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

import anyio
import structlog

from channels.version import version
from config.redact import url_without_secrets

if TYPE_CHECKING:
    from agent.providers.base import Provider
    from config import Settings

log = structlog.get_logger("hero.daemon")

#: the longest the start-up check waits for the provider
PING_DEADLINE_S = 10.0
Facts = dict[str, str]


def page_url(settings: Settings) -> str:
    """The web page's address as a browser on this machine reaches it ("" when the web is off)."""
    if not settings.web.enabled:
        return ""
    host = settings.web.host
    if host in ("0.0.0.0", "::", ""):  # every interface: this machine reaches it on loopback
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.web.port}/"


def store_location(settings: Settings) -> str:
    """Where the data lives: the embedded data dir, or the remote store's URL with its password masked."""
    if settings.store.engine == "embedded":
        return str(settings.store.path)
    return url_without_secrets(settings.store.url)


def channel_names(settings: Settings, names: list[str]) -> str:
    shown = [f"telegram ({settings.telegram.mode})" if n == "telegram" else n for n in names]
    return ", ".join(shown)


def startup_facts(settings: Settings, names: list[str], provider_problem: str) -> Facts:
    """The banner's facts, also the fields of the ``daemon.ready`` log event."""
    return {
        "version": version(),
        "url": page_url(settings),
        "provider": settings.llm.provider,
        "base_url": settings.llm.base_url,
        "model": settings.llm.model,
        "channels": channel_names(settings, names),
        "store": settings.store.engine,
        "data": store_location(settings),
        "provider_status": f"unreachable: {provider_problem}" if provider_problem else "ok",
    }


async def check_provider(provider: Provider) -> str:
    """Ping the provider once; "" when it answers, else the one-line reason (and a warning logged)."""
    from agent.errors import ProviderError  # noqa: PLC0415 (the agent is loaded by now anyway)

    problem = ""
    try:
        with anyio.fail_after(PING_DEADLINE_S):
            await provider.ping()
    except TimeoutError:
        problem = f"no answer within {PING_DEADLINE_S:g} s"
    except ProviderError as exc:
        problem = str(exc) or type(exc).__name__
    if problem:
        log.warning(
            "daemon.provider_unreachable",
            reason=problem,
            fix="check llm.base_url and the API key; `hero-agent doctor` tests them",
        )
    return problem


def banner(facts: Facts) -> str:
    """A few lines for people: where the page is, what answers, where the data goes."""
    lines = [f"hero-agent {facts['version']} is ready"]
    if facts["url"]:
        lines.append(f"  page      {facts['url']}")
    lines.append(f"  model     {facts['model']} ({facts['provider']} at {facts['base_url']})")
    lines.append(f"  channels  {facts['channels']}")
    lines.append(f"  store     {facts['store']} at {facts['data']}")
    if facts["provider_status"] != "ok":
        lines.append(f"  warning   the provider is {facts['provider_status']}")
        lines.append("            replies fail until it answers; run `hero-agent doctor` for the fix")
    lines.append("Ctrl-C stops.")
    return "\n".join(lines) + "\n"


def print_banner(facts: Facts, stream: TextIO | None = None) -> None:
    """The banner on ``stream`` (stdout), only when that is a terminal."""
    out = sys.stdout if stream is None else stream
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        out.write(banner(facts))
        out.flush()
