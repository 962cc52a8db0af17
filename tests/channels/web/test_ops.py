"""Health, readiness, metrics, the OpenAPI document's coverage, and the channel's start failures."""

from __future__ import annotations

import re
import socket
import sys
from dataclasses import replace
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.routing import Mount, Route

from agent.core import TurnRequest
from agent.events import CommandOutput, Done, TurnFailed
from agent.factory import open_agent
from agent.metrics import TurnMetrics
from agent.providers.base import ToolCall
from agent.tools.base import ToolCaller
from channels.errors import ChannelStartError
from channels.web import WebChannel, create_app
from channels.web.metrics import Metrics
from config.settings import MCPServerSettings
from store import Scope, open_store
from tests.channels.web.conftest import ALICE, Web, chat, serve_web, web_settings, with_web
from tests.fakes.openai_server import FakeOpenAI
from tests.waiting import until

pytestmark = pytest.mark.anyio

MCP_SERVER = Path(__file__).resolve().parents[2] / "fakes" / "mcp_stdio_server.py"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_health_and_readiness(web: Web) -> None:
    async with web.client() as anonymous:
        assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
        ready = await anonymous.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}


async def test_not_ready_when_the_provider_is_unreachable(tmp_path: Path) -> None:
    settings = web_settings(tmp_path, f"http://127.0.0.1:{_closed_port()}/v1")
    async with serve_web(settings) as web, web.client() as anonymous:
        resp = await anonymous.get("/readyz")
        assert resp.status_code == 503
        assert resp.json()["error"] == {"code": "not_ready", "message": "the LLM provider is not reachable"}
        assert (await anonymous.get("/healthz")).status_code == 200  # alive all the same


async def test_a_dead_mcp_server_shows_as_degraded_while_ready_stays_200(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    """A stdio MCP server whose process exits mid-session (``die``) and cannot start again while its
    down file exists: /readyz stays 200 but says ``degraded`` with the server's name, /metrics counts
    the death; once it is back, /readyz says ``ready`` again and /metrics counts the restart."""
    down = tmp_path / "down"
    server = MCPServerSettings(
        name="files",
        command=sys.executable,
        args=(str(MCP_SERVER),),
        env=(("FAKE_MCP_DOWN_FILE", str(down)),),
    )
    settings = web_settings(tmp_path, fake.base_url)
    settings = replace(settings, tools=replace(settings.tools, mcp_servers=(server,)))
    async with serve_web(settings) as web, web.client() as anonymous:
        assert (await anonymous.get("/readyz")).json() == {"status": "ready"}
        assert web.agent.tools is not None
        down.touch()
        ctx = ToolCaller(web.store, Scope("default", "alice"), "c1", "web")
        with anyio.fail_after(20):
            await web.agent.tools.execute(
                ToolCall("1", "files__die", "{}"), ctx, timeout_s=10, max_result_chars=500
            )

        async def degraded() -> httpx.Response | None:
            ready = await anonymous.get("/readyz")
            return ready if ready.json()["status"] != "ready" else None

        ready = await until(degraded, timeout=20, interval=0.05, what="/readyz to say degraded")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "degraded",
            "degraded": {"mcp_servers": [{"server": "files", "state": "restarting"}]},
        }
        text = (await anonymous.get("/metrics")).text
        assert 'hero_mcp_server_up{server="files"} 0' in text
        assert 'hero_mcp_server_deaths_total{server="files"} 1' in text
        down.unlink()

        async def ready_again() -> bool:
            return bool((await anonymous.get("/readyz")).json() == {"status": "ready"})

        await until(ready_again, timeout=30, interval=0.1, what="/readyz to say ready again")
        text = (await anonymous.get("/metrics")).text
        assert 'hero_mcp_server_up{server="files"} 1' in text
        assert 'hero_mcp_server_restarts_total{server="files"} 1' in text


async def test_metrics_count_turns_tokens_and_latency(web: Web, alice: httpx.AsyncClient) -> None:
    await chat(alice, {"message": "count me"})
    await chat(alice, {"message": "/help"})
    text = (await alice.get("/metrics")).text
    assert 'hero_turns_total{channel="web",outcome="complete"} 1' in text
    assert 'hero_turns_total{channel="web",outcome="command"} 1' in text
    assert re.search(r'hero_tokens_total\{channel="web",kind="completion"\} [1-9]', text)
    assert 'hero_turn_duration_seconds_count{channel="web"} 1' in text
    assert 'hero_turn_duration_seconds_bucket{channel="web",le="+Inf"} 1' in text
    assert 'hero_time_to_first_token_seconds_count{channel="web"} 1' in text
    assert "hero_active_streams 0" in text
    assert "# TYPE hero_turn_duration_seconds histogram" in text


async def test_metrics_count_the_turns_of_every_channel_the_agent_serves(
    web: Web, alice: httpx.AsyncClient
) -> None:
    """Under ``serve`` one Agent serves every channel: a Telegram or CLI turn shows in /metrics too."""
    await chat(alice, {"message": "from the web"})
    scope = Scope("default", "alice")
    with anyio.fail_after(20):
        events = [ev async for ev in web.agent.handle(TurnRequest(scope, "telegram", "from telegram"))]
        [out] = [ev async for ev in web.agent.handle(TurnRequest(scope, "cli", "/help"))]
        bad = [ev async for ev in web.agent.handle(TurnRequest(scope, "cli", "x" * 10_000_000))]
    assert isinstance(events[-1], Done)
    assert isinstance(out, CommandOutput)
    assert isinstance(bad[-1], TurnFailed)
    text = (await alice.get("/metrics")).text
    assert 'hero_turns_total{channel="web",outcome="complete"} 1' in text
    assert 'hero_turns_total{channel="telegram",outcome="complete"} 1' in text
    assert 'hero_turns_total{channel="cli",outcome="command"} 1' in text
    assert 'hero_turns_total{channel="cli",outcome="error"} 1' in text
    assert 'hero_turn_errors_total{channel="cli",code="message_too_large"} 1' in text
    assert 'hero_time_to_first_token_seconds_count{channel="telegram"} 1' in text
    assert re.search(r'hero_tokens_total\{channel="telegram",kind="prompt"\} [1-9]', text)
    assert re.search(r'hero_http_requests_total\{method="POST",status="200"\} [1-9]', text)


def test_metrics_histogram_buckets_are_cumulative() -> None:
    metrics = TurnMetrics()
    for seconds in (0.01, 0.2, 0.2, 700.0):
        metrics.turn_finished(
            "web", "complete", seconds=seconds, ttft=None, prompt_tokens=0, completion_tokens=0
        )
    metrics.turn_finished(
        "api",
        "error",
        seconds=1.0,
        ttft=0.5,
        prompt_tokens=3,
        completion_tokens=0,
        error_code="provider_error",
    )
    text = Metrics().render(metrics)
    assert 'hero_turn_duration_seconds_bucket{channel="web",le="0.05"} 1' in text
    assert 'hero_turn_duration_seconds_bucket{channel="web",le="0.25"} 3' in text
    assert 'hero_turn_duration_seconds_bucket{channel="web",le="300"} 3' in text
    assert 'hero_turn_duration_seconds_bucket{channel="web",le="+Inf"} 4' in text
    assert 'hero_turn_errors_total{channel="api",code="provider_error"} 1' in text
    assert 'hero_tokens_total{channel="api",kind="prompt"} 3' in text


async def test_openapi_documents_every_route(web: Web) -> None:
    async with web.client() as anonymous:
        doc = (await anonymous.get("/openapi.json")).json()
    app = create_app(web.settings, web.agent)
    implemented: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, Route) and route.methods:
            for method in route.methods - {"HEAD"}:
                implemented.add((route.path, method.lower()))
        else:
            assert isinstance(route, Mount)  # /static: files, not API
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert implemented - {("/", "get"), ("/openapi.json", "get")} == documented
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["paths"]["/api/chat"]["post"]["security"] == [{"bearer": []}]


async def test_refuses_non_loopback_without_tokens(tmp_path: Path, fake: FakeOpenAI) -> None:
    settings = with_web(web_settings(tmp_path, fake.base_url, tokens=()), host="0.0.0.0")
    async with open_store(settings) as store, open_agent(settings, store) as agent:
        channel = WebChannel(settings, agent)
        with pytest.raises(
            ChannelStartError, match=r"refusing to listen on 0\.0\.0\.0 without authentication"
        ):
            await channel.start()
        await channel.stop()  # safe after a failed start


async def test_port_in_use_is_one_clear_line(tmp_path: Path, fake: FakeOpenAI) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        settings = with_web(web_settings(tmp_path, fake.base_url), port=port)
        async with open_store(settings) as store, open_agent(settings, store) as agent:
            channel = WebChannel(settings, agent)
            with pytest.raises(ChannelStartError) as err:
                await channel.start()
            await channel.stop()
    assert str(err.value) == f"web: cannot listen on 127.0.0.1:{port}: the address is already in use"
    assert "\n" not in str(err.value)


async def test_cors_when_configured(tmp_path: Path, fake: FakeOpenAI) -> None:
    settings = web_settings(tmp_path, fake.base_url, cors_origins=("https://app.example",))
    async with serve_web(settings) as web, web.client(ALICE) as client:
        ok = await client.get("/api/stats", headers={"Origin": "https://app.example"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        other = await client.get("/api/stats", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_a_huge_request_header_gets_431_not_a_reset(web: Web) -> None:
    """200 KB of header: a real uvicorn reads it and answers 431 with the usual error body (before,
    h11 gave up at 16 KB and closed the connection under the client: a TCP reset)."""
    async with web.client() as anonymous:
        resp = await anonymous.get("/healthz", headers={"X-Junk": "j" * 200_000})
        assert resp.status_code == 431
        assert resp.json()["error"]["code"] == "headers_too_large"
        # the server is fine afterwards
        assert (await anonymous.get("/healthz")).status_code == 200
        text = (await anonymous.get("/metrics")).text
        assert 'hero_http_requests_total{method="GET",status="431"} 1' in text
