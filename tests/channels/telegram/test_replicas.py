"""Telegram across replicas: real ``hero-agent serve`` processes on one PostgreSQL database.

* Polling: exactly one daemon polls (the leader lease); the other reports ``standby`` in ``/readyz``
  and takes over when the leader is killed (-9). The fake Bot API answers 409 to an older
  ``getUpdates`` when a newer one arrives, as Telegram does: two overlapping pollers would show there.
* Webhook: every replica serves the webhook; the same update posted to both is answered once.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.channels.replicas import Replica, free_port, replicas, store_toml
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.telegram_server import TOKEN, FakeBotAPI
from tests.store.postgres_fixtures import drop_database, new_database, stop_cluster
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

SECRET = "replica-webhook-secret"
CHAT = 5


@pytest.fixture(scope="module", autouse=True)
def _cluster() -> Iterator[None]:
    yield
    stop_cluster()


@pytest.fixture
async def pg_store() -> AsyncIterator[str]:
    url = await new_database()
    try:
        yield store_toml("postgres", url)
    finally:
        await drop_database(url)


def _telegram(bot: FakeBotAPI, extra: str = "") -> str:
    return (
        f'[telegram]\nenabled = true\ntoken = "{TOKEN}"\napi_base_url = "{bot.base_url}"\n'
        f"allowed_users = [{CHAT}]\npoll_timeout_s = 2\n{extra}"
    )


async def _telegram_state(client: httpx.AsyncClient, r: Replica) -> str:
    resp = await client.get(f"{r.base_url}/readyz")
    assert resp.status_code == 200, resp.text
    return str(resp.json().get("channels", {}).get("telegram", ""))


async def _states(client: httpx.AsyncClient, rs: list[Replica]) -> list[str]:
    return [await _telegram_state(client, r) for r in rs]


async def _one_polling_one_standby(client: httpx.AsyncClient, rs: list[Replica]) -> list[str]:
    """Wait until one replica polls and the other stands by; their states then."""

    async def settled() -> list[str] | None:
        states = await _states(client, rs)
        return states if sorted(states) == ["polling", "standby"] else None

    return await until(settled, timeout=30, interval=0.1, what="one poller and one standby")


async def _polling(client: httpx.AsyncClient, r: Replica) -> None:
    async def polls() -> bool:
        return await _telegram_state(client, r) == "polling"

    await until(polls, timeout=30, interval=0.1, what=f"{r.name} to poll")


async def _metric(client: httpx.AsyncClient, r: Replica, prefix: str) -> list[str]:
    text = (await client.get(f"{r.base_url}/metrics")).text
    return [line for line in text.splitlines() if line.startswith(prefix)]


async def test_one_poller_and_a_standby_that_takes_over_after_kill_9(tmp_path: Path, pg_store: str) -> None:
    async with (
        FakeOpenAI() as llm,
        FakeBotAPI() as bot,
        httpx.AsyncClient(timeout=10) as client,
        replicas(tmp_path, 2, pg_store, llm.base_url, extra=_telegram(bot)) as rs,
    ):
        states = await _one_polling_one_standby(client, rs)
        leader, standby = (rs[0], rs[1]) if states[0] == "polling" else (rs[1], rs[0])
        bot.push_update(bot.text_update(chat_id=CHAT, user_id=CHAT, text="first"))
        await bot.wait_for(lambda: "echo: first" in bot.messages_in(CHAT), timeout=30)

        leader.process.send_signal(signal.SIGKILL)
        await leader.process.wait()
        await _polling(client, standby)  # a deadline, not a timing claim
        bot.push_update(bot.text_update(chat_id=CHAT, user_id=CHAT, text="second"))
        await bot.wait_for(lambda: "echo: second" in bot.messages_in(CHAT), timeout=30)
        events = await _metric(client, standby, "hero_telegram_leader_events_total")
        assert 'hero_telegram_leader_events_total{event="takeover"} 1' in events, events
        assert 'hero_telegram_leader_events_total{event="acquired"} 1' in events, events
        gauge = await _metric(client, standby, "hero_channel_state")
        assert gauge == ['hero_channel_state{channel="telegram",state="polling"} 1']
    assert bot.messages_in(CHAT) == ["echo: first", "echo: second"]
    assert bot.conflicts_sent == 0  # the two daemons never polled at once


async def test_a_clean_stop_hands_polling_over_without_a_conflict(tmp_path: Path, pg_store: str) -> None:
    async with (
        FakeOpenAI() as llm,
        FakeBotAPI() as bot,
        httpx.AsyncClient(timeout=10) as client,
        replicas(tmp_path, 2, pg_store, llm.base_url, extra=_telegram(bot)) as rs,
    ):
        states = await _one_polling_one_standby(client, rs)
        leader, standby = (rs[0], rs[1]) if states[0] == "polling" else (rs[1], rs[0])
        leader.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await leader.process.wait() == 0
        await _polling(client, standby)
        bot.push_update(bot.text_update(chat_id=CHAT, user_id=CHAT, text="after the hand-over"))
        await bot.wait_for(lambda: "echo: after the hand-over" in bot.messages_in(CHAT), timeout=30)
        events = await _metric(client, standby, "hero_telegram_leader_events_total")
        # the leader released the lease: taken as free, not over a dead or lapsed holder
        assert not [e for e in events if 'event="takeover"' in e], events
        assert 'hero_telegram_leader_events_total{event="acquired"} 1' in events, events
    assert bot.conflicts_sent == 0


async def test_webhook_on_every_replica_answers_each_update_once(tmp_path: Path, pg_store: str) -> None:
    ports = [free_port(), free_port()]
    async with (
        FakeOpenAI() as llm,
        FakeBotAPI() as bot,
        httpx.AsyncClient(timeout=30) as client,
        replicas(tmp_path, 1, pg_store, llm.base_url, extra=_webhook(bot, ports[0])) as (a,),
        replicas(tmp_path / "b", 1, pg_store, llm.base_url, extra=_webhook(bot, ports[1])) as (b,),
    ):

        async def both_webhook() -> bool:
            return await _states(client, [a, b]) == ["webhook", "webhook"]

        # the web channel answers before the bot has started
        await until(both_webhook, timeout=30, interval=0.1, what="both replicas in webhook mode")
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        urls = [f"http://127.0.0.1:{p}/telegram/webhook" for p in ports]
        # the same update to both replicas at once (a retry that landed elsewhere), ten times
        for n in range(10):
            update = bot.text_update(chat_id=CHAT, user_id=CHAT, text=f"same {n}")
            update["update_id"] = 7000 + n
            async with anyio.create_task_group() as tg:
                for url in urls:
                    tg.start_soon(_post, client, url, update, headers)
        # and distinct updates spread over both
        for n in range(10):
            update = bot.text_update(chat_id=CHAT, user_id=CHAT, text=f"spread {n}")
            update["update_id"] = 8000 + n
            await _post(client, urls[n % 2], update, headers)
        expected = [f"echo: same {n}" for n in range(10)] + [f"echo: spread {n}" for n in range(10)]
        await bot.wait_for(lambda: len(bot.messages_in(CHAT)) >= len(expected), timeout=60)
        dropped = 0
        for r in (a, b):
            for line in await _metric(client, r, "hero_telegram_duplicate_updates_total"):
                dropped += int(line.rsplit(" ", 1)[1])
    assert sorted(bot.messages_in(CHAT)) == sorted(expected)
    assert dropped == 10  # one of each pair posted twice


def _webhook(bot: FakeBotAPI, port: int) -> str:
    return _telegram(
        bot,
        f'mode = "webhook"\nwebhook_url = "https://bot.example.org/telegram/webhook"\n'
        f'webhook_secret = "{SECRET}"\nwebhook_port = {port}\n',
    )


async def _post(
    client: httpx.AsyncClient, url: str, update: dict[str, object], headers: dict[str, str]
) -> None:
    resp = await client.post(url, json=update, headers=headers)
    assert resp.status_code == 200, resp.text
