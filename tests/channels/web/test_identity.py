"""The web page's identity: pairing approvals, /status and /model, the local user, old ``local`` data."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import structlog

from config.settings import UserLink
from store import IdentityLink, PairingCode, Scope
from tests.channels.web.conftest import ALICE, BOB, Web, chat, serve_web, web_settings
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.anyio


async def _code(web: Web, code: str, telegram_id: int, ttl_ms: int = 60_000) -> None:
    now = int(time.time() * 1000)
    await web.store.links.add_pairing_code(
        PairingCode("telegram", code, str(telegram_id), "Ann", "ann", now, now + ttl_ms)
    )


async def test_a_signed_in_user_approves_a_pairing_code(web: Web) -> None:
    await _code(web, "ABCD2345", 4242)
    async with web.client(ALICE) as alice, web.client(BOB) as bob:
        approved = await alice.post("/api/pairing/approve", json={"code": "abcd-2345"})
        assert approved.status_code == 200, approved.text
        assert approved.json() | {"linked_at": 0} == {
            "telegram_id": "4242",
            "user": "alice",
            "linked_at": 0,
            "by": "web:alice",
        }
        assert await web.agent.pairing.linked_user(4242) == "alice"
        links = (await alice.get("/api/pairing/links")).json()["items"]
        assert [x["telegram_id"] for x in links] == ["4242"]
        assert (await bob.get("/api/pairing/links")).json() == {"items": []}  # only the caller's

        again = await bob.post("/api/pairing/approve", json={"code": "ABCD2345"})
        assert again.status_code == 404 and again.json()["error"]["code"] == "pairing_not_found"
        bad = await bob.post("/api/pairing/approve", json={"code": "x"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "pairing_invalid"
        assert (await bob.post("/api/pairing/approve", json={"code": 5})).status_code == 400
        assert (await bob.post("/api/pairing/approve", json={"code": "ABCD2345", "x": 1})).status_code == 400
    async with web.client() as anonymous:
        assert (await anonymous.post("/api/pairing/approve", json={"code": "ABCD2345"})).status_code == 401
    assert await web.agent.pairing.linked_user(4242) == "alice"  # nothing changed by the refusals
    assert web.agent.pairing.counts["approvals"] == 1
    async with web.client() as anonymous:
        metrics = (await anonymous.get("/metrics")).text
    assert 'hero_telegram_pairing_total{event="approvals"} 1' in metrics


async def test_a_config_linked_id_is_refused_on_the_web(tmp_path: Path, fake: FakeOpenAI) -> None:
    settings = dataclasses.replace(
        web_settings(tmp_path, fake.base_url), users=(UserLink(name="bob", telegram_ids=(77,)),)
    )
    async with serve_web(settings) as web, web.client(ALICE) as alice:
        await _code(web, "ZZZZ2222", 77)
        refused = await alice.post("/api/pairing/approve", json={"code": "ZZZZ2222"})
        assert refused.status_code == 409 and "[users.bob]" in refused.json()["error"]["message"]
        assert await web.agent.pairing.linked_user(77) == "bob"


async def test_status_and_model_commands_on_the_web(tmp_path: Path, fake: FakeOpenAI) -> None:
    settings = web_settings(tmp_path, fake.base_url)
    settings = dataclasses.replace(
        settings, llm=dataclasses.replace(settings.llm, fallback_models=("fake-big",))
    )
    async with serve_web(settings) as web, web.client(ALICE) as alice:
        [(name, status)] = await chat(alice, {"message": "/status"})
        assert name == "command" and status["command"] == "status"
        assert status["data"]["model"] == "fake-model" and status["data"]["store"] == "embedded"
        assert status["data"]["provider"] == "openai" and status["data"]["context"] == "default"
        [(_, models)] = await chat(alice, {"message": "/model"})
        assert models["data"]["models"] == ["fake-model", "fake-big"]
        [(_, switched)] = await chat(alice, {"message": "/model fake-big"})
        assert switched["ok"] and switched["data"]["model"] == "fake-big"
        await chat(alice, {"message": "hello"})
        assert fake.requests[-1]["model"] == "fake-big"
        [(_, after)] = await chat(alice, {"message": "/status"})
        assert after["data"]["model"] == "fake-big"
        conv = (await alice.get(f"/api/conversations/{after['data']['conversation']['id']}")).json()
        assert conv["model"] == "fake-big"
        [(_, unknown)] = await chat(alice, {"message": "/model gpt-9"})
        assert unknown["ok"] is False and "fake-model, fake-big" in unknown["text"]


async def test_old_local_data_is_named_at_start(tmp_path: Path, fake: FakeOpenAI) -> None:
    settings = dataclasses.replace(web_settings(tmp_path, fake.base_url, tokens=()), os_user="ann")
    async with serve_web(settings) as web:
        await web.store.conversations.create(Scope("default", "local"), "from the old page")
    with structlog.testing.capture_logs() as logs:
        async with serve_web(settings) as web, web.client() as page:
            assert (await page.get("/api/stats")).json()["user"] == "ann"
    [warning] = [e for e in logs if e["event"] == "web.local_user_data"]
    assert warning["log_level"] == "warning" and warning["fix"] == "hero-agent store rename-user local ann"
    # with [web] local_user set, nothing is said
    named = dataclasses.replace(settings, web=dataclasses.replace(settings.web, local_user="local"))
    with structlog.testing.capture_logs() as logs:
        async with serve_web(named) as web, web.client() as page:
            assert (await page.get("/api/conversations")).json()["items"][0]["title"] == "from the old page"
    assert not [e for e in logs if e["event"] == "web.local_user_data"]


async def test_link_by_pairing_is_listed_for_the_linked_user_only(web: Web) -> None:
    await web.store.links.set(IdentityLink("telegram", "9", "bob", 1, "cli:root"))
    async with web.client(ALICE) as alice, web.client(BOB) as bob:
        assert (await alice.get("/api/pairing/links")).json() == {"items": []}
        assert [x["user"] for x in (await bob.get("/api/pairing/links")).json()["items"]] == ["bob"]
