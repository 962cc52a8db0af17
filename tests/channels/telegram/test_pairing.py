"""Telegram pairing end to end: a stranger's code, ``hero-agent pair`` in another process, the link.

The bot runs in the test's loop against the fake Bot API; ``hero-agent pair ...`` runs as a real
subprocess on the same data dir (the embedded store is shared between processes).
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from agent.pairing import PairingError
from config.settings import Settings
from store import PairingCode, Scope
from tests.channels.telegram.conftest import ALICE, BOB, MALLORY, running
from tests.channels.telegram.helpers import stored_messages
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.telegram_server import TOKEN, FakeBotAPI
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

CODE_RE = re.compile(r"Pairing code: ([2-9A-Z]{8}) ")
GROUP = -100777


def cli_config(settings: Settings, tmp_path: Path) -> Path:
    """A config file naming the same data dir and [users.bob] as ``settings``."""
    path = tmp_path / "cli.toml"
    path.write_text(
        f'[store]\npath = "{settings.store.path}"\n\n[users.bob]\ntelegram_ids = [{BOB}]\n', encoding="utf-8"
    )
    return path


async def pair(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "channels.main", "--config", str(config), "pair", *args]
    with anyio.fail_after(60):
        return await anyio.run_process(cmd, check=False, env=env)


async def ask_bot(
    tg: FakeBotAPI, chat: int, text: str, count: int, *, first_name: str = "User", username: str | None = None
) -> str:
    """Send ``text`` from ``chat`` (a private chat: the sender's id) and wait for the ``count``-th
    message the bot sent there."""
    tg.push_update(tg.text_update(chat, chat, text, first_name=first_name, username=username))
    await tg.wait_for(lambda: len(tg.messages_in(chat)) >= count, timeout=15)
    return tg.messages_in(chat)[count - 1]


async def test_a_stranger_pairs_and_is_linked(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI, tmp_path: Path
) -> None:
    config = cli_config(settings, tmp_path)
    async with running(settings) as (_channel, agent):
        refusal = await ask_bot(tg, MALLORY, "/start", 1, first_name="Mallory", username="mal_tg")
        assert f"Your Telegram id: {MALLORY}" in refusal and refusal.startswith("Hello Mallory!")
        match = CODE_RE.search(refusal)
        assert match is not None
        code = match.group(1)
        assert f"hero-agent pair approve {code}" in refusal
        # asking again shows the same pending code
        again = await ask_bot(tg, MALLORY, "hello?", 2, first_name="Mallory", username="mal_tg")
        assert CODE_RE.search(again) is not None and code in again
        assert llm.request_count == 0

        listed = await pair(config, "list")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.decode().splitlines()
        assert lines[0].split() == ["CODE", "TELEGRAM", "ID", "NAME", "USERNAME", "AGE"]
        row = lines[1].split()
        assert row[:4] == [code, str(MALLORY), "Mallory", "@mal_tg"] and re.fullmatch(r"\d+s", row[4])
        assert "No linked Telegram ids" in listed.stdout.decode()

        approved = await pair(config, "approve", code.lower(), "--user", "mallory")
        assert approved.returncode == 0, approved.stderr
        assert approved.stdout.decode().strip() == (
            f"Linked Telegram id {MALLORY} to user 'mallory': the bot answers them from now on."
        )
        # the running bot answers from the next message on, as the linked user
        assert await ask_bot(tg, MALLORY, "hi, it is me", 3) == "echo: hi, it is me"
        stored = await stored_messages(agent.store, Scope("default", "mallory"))
        assert [m.content for m in stored] == ["hi, it is me", "echo: hi, it is me"]
        assert await stored_messages(agent.store, Scope("default", f"tg:{MALLORY}")) == []

        listing = (await pair(config, "list")).stdout.decode()
        assert "No pending pairing codes." in listing
        assert re.search(rf"^{MALLORY}\s+mallory\s+\d{{4}}-\d\d-\d\d \d\d:\d\d\s+cli:\S+$", listing, re.M)

        reused = await pair(config, "approve", code)
        assert reused.returncode == 1
        assert reused.stderr.decode().strip() == (
            f"hero-agent: error: no pending pairing code {code} (it may have expired: ask for a new one)"
        )
        assert (await pair(config, "approve", "nonsense")).returncode == 1

        # an id of [users.*] in the config cannot be unlinked (or paired) from here
        config_linked = await pair(config, "unlink", str(BOB))
        assert config_linked.returncode == 1 and "[users.bob]" in config_linked.stderr.decode()

        unlinked = await pair(config, "unlink", str(MALLORY))
        assert unlinked.stdout.decode().strip() == f"Unlinked Telegram id {MALLORY} (was 'mallory')."
        assert (await pair(config, "unlink", str(MALLORY))).returncode == 1
        # a stranger again: refused with a new code, which the owner denies
        refused = await ask_bot(tg, MALLORY, "and now?", 4)
        new_code = CODE_RE.search(refused)
        assert new_code is not None and new_code.group(1) != code
        denied = await pair(config, "deny", new_code.group(1))
        assert (
            denied.stdout.decode().strip()
            == f"Denied pairing code {new_code.group(1)} of Telegram id {MALLORY}."
        )
        assert "No pending pairing codes." in (await pair(config, "list")).stdout.decode()
        counts = agent.pairing.counts
        assert (counts["pairing_attempts"], counts["codes_issued"]) == (3, 2)


async def test_attempts_are_rate_limited_per_telegram_user(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    settings = dataclasses.replace(
        settings, telegram=dataclasses.replace(settings.telegram, pairing_attempts_per_hour=2)
    )
    other = 667
    async with running(settings) as (_channel, agent):
        for text in ("one", "two", "three", "four"):
            tg.push_update(tg.text_update(MALLORY, MALLORY, text))
        tg.push_update(tg.text_update(other, other, "me too"))
        # an allowed user's message after them proves every earlier update was handled
        tg.push_update(tg.text_update(ALICE, ALICE, "hi"))
        await tg.wait_for(lambda: tg.messages_in(ALICE) == ["echo: hi"], timeout=10)
        await tg.wait_for(lambda: len(tg.messages_in(other)) == 1, timeout=10)
        await tg.wait_for(lambda: agent.pairing.counts["pairing_attempts"] == 5, timeout=10)
        assert len(tg.messages_in(MALLORY)) == 2  # the other two were not answered
        assert agent.pairing.counts["rate_limited"] == 2 and agent.pairing.counts["codes_issued"] == 2
        metrics = "\n".join(agent.pairing.render_lines())
        assert 'hero_telegram_pairing_total{event="rate_limited"} 2' in metrics
        assert 'hero_telegram_pairing_total{event="pairing_attempts"} 5' in metrics


async def test_codes_expire(settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI, tmp_path: Path) -> None:
    settings = dataclasses.replace(
        settings, telegram=dataclasses.replace(settings.telegram, pairing_code_ttl_s=0.5)
    )
    config = cli_config(settings, tmp_path)
    async with running(settings) as (_channel, agent):
        first = CODE_RE.search(await ask_bot(tg, MALLORY, "hi", 1))
        assert first is not None
        [pending] = await agent.pairing.pending()
        await until(
            lambda: time.time() * 1000 > pending.expires_at,
            timeout=5,
            interval=0.05,
            what="the code's expiry time to pass",
        )
        expired = await pair(config, "approve", first.group(1))
        assert expired.returncode == 1 and "no pending pairing code" in expired.stderr.decode()
        assert "No pending pairing codes." in (await pair(config, "list")).stdout.decode()
        second = CODE_RE.search(await ask_bot(tg, MALLORY, "hi again", 2))
        assert second is not None and second.group(1) != first.group(1)


async def test_groups_show_the_id_but_no_code(settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI) -> None:
    async with running(settings) as (_channel, agent):
        tg.push_update(tg.group_update(GROUP, MALLORY, "@hero_test_bot hello"))
        await tg.wait_for(lambda: tg.messages_in(GROUP), timeout=10)
        [text] = tg.messages_in(GROUP)
        assert f"your Telegram id: {MALLORY}" in text and "private chat" in text
        assert CODE_RE.search(text) is None
        assert await agent.pairing.pending() == []


async def test_a_config_linked_id_cannot_be_paired_away(
    settings: Settings, tg: FakeBotAPI, llm: FakeOpenAI
) -> None:
    async with running(settings) as (_channel, agent):
        # a code for an id the config links (the config changed after the code was issued)
        now = int(time.time() * 1000)
        await agent.store.links.add_pairing_code(
            PairingCode("telegram", "ABCDEFGH", str(BOB), "", "", now, now + 60_000)
        )
        with pytest.raises(PairingError, match=r"\[users.bob\]"):
            await agent.pairing.approve("ABCDEFGH", "mallory", by="test")
        assert await agent.pairing.linked_user(BOB) == "bob"
        # bob is answered as bob, never asked to pair
        tg.push_update(tg.text_update(BOB, BOB, "hello"))
        await tg.wait_for(lambda: tg.messages_in(BOB) == ["echo: hello"], timeout=10)


@pytest.mark.e2e
async def test_a_link_survives_a_daemon_restart(tmp_path: Path, tg: FakeBotAPI, llm: FakeOpenAI) -> None:
    """``hero-agent serve`` as a real process: pair, approve from the CLI, restart, still linked."""
    config = tmp_path / "hero-agent.toml"
    config.write_text(
        f"""
[llm]
base_url = "{llm.base_url}"
api_key = "sk-test-key"
model = "fake-model"

[memory]
enabled = false

[store]
path = "{tmp_path / "data"}"

[web]
enabled = false

[telegram]
enabled = true
api_base_url = "{tg.base_url}"
poll_timeout_s = 1
""",
        encoding="utf-8",
    )
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": TOKEN, "HERO_AGENT_LOGGING__FORMAT": "json"}
    cmd = [sys.executable, "-m", "channels.main", "serve", "--config", str(config)]

    async with _daemon(cmd, env, tg, tmp_path / "first.log"):
        code = CODE_RE.search(await ask_bot(tg, MALLORY, "hello", 1))
        assert code is not None
        approved = await pair(config, "approve", code.group(1), "--user", "mallory", env=env)
        assert approved.returncode == 0, approved.stderr
        assert await ask_bot(tg, MALLORY, "linked now?", 2) == "echo: linked now?"
    async with _daemon(cmd, env, tg, tmp_path / "second.log"):
        assert await ask_bot(tg, MALLORY, "after the restart", 3) == "echo: after the restart"
    assert tg.messages_in(MALLORY)[0].startswith("Hello User!")


@asynccontextmanager
async def _daemon(cmd: list[str], env: dict[str, str], tg: FakeBotAPI, log: Path) -> AsyncIterator[None]:
    polls = tg.counts["getUpdates"]
    with log.open("wb") as out:
        proc = await anyio.open_process(cmd, env=env, stdout=subprocess.DEVNULL, stderr=out)
    try:
        await tg.wait_for(lambda: tg.counts["getUpdates"] > polls, timeout=30)
        yield
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.aclose()
