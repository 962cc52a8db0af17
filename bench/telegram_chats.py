"""Many Telegram chats at once, through the real channel, against Telegram-like flood limits.

``FakeBotAPI`` runs in its own process (``python -m tests.fakes.telegram_server --limits``; the bench
pushes updates and reads the transcripts through its ``/_fake`` control routes) and enforces limits
like Telegram's: a chat gets a 429 when it receives messages or edits less than 0.9 s apart, and every
chat gets one when the bot sends more than 30 in a second; it counts those 429s. ``FakeOpenAI`` runs in
its own process too and streams each answer in ``--tokens`` chunks ``--chunk-delay`` apart. The real
TelegramChannel, Agent and embedded store run in this process.

Every chat sends ``--messages`` messages at the same instant (one batch, queued before the bot polls).
We measure, per message, the time from the push until the chat shows the complete answer (the fake's
CLOCK_MONOTONIC timestamps, comparable with ours), and check that every chat got every answer in order
and that our own pacing caused no 429. Each ``--concurrency``
value (turns running at once over all chats) is a separate run on a fresh store.

    .venv/bin/python -m bench.telegram_chats [--chats 100] [--messages 3] [--concurrency 16,32,64]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog

from agent.factory import open_agent
from bench.common import pct
from channels.telegram import TelegramChannel
from config.settings import LLMSettings, MemorySettings, Settings, StoreSettings, TelegramSettings
from store import open_store
from tests.fakes.telegram_server import TOKEN

FIRST_CHAT = 10_000


@dataclasses.dataclass
class Result:
    concurrency: int
    label: str
    answers: int
    expected: int
    in_order: bool
    seconds: float
    latencies: list[float]
    rate_limited: int
    rate_limited_by: dict[str, int]
    sends: int
    edits: int


@contextlib.contextmanager
def fake_process(module: str, *args: str) -> Iterator[str]:
    """A fake server in its own process (its work never competes with the channel for the GIL);
    yields the base URL it prints in its ``READY`` line."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", module, "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise SystemExit(f"{module} did not start: {line!r}")
        yield line.split()[1]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def make_settings(
    data: Path, llm_url: str, tg_url: str, chats: int, concurrency: int, unpaced: bool
) -> Settings:
    return Settings(
        llm=LLMSettings(base_url=llm_url, api_key="sk-bench", model="fake-model", max_retries=0),
        memory=MemorySettings(enabled=False),
        store=StoreSettings(engine="embedded", path=data),
        telegram=TelegramSettings(
            enabled=True,
            token=TOKEN,
            api_base_url=tg_url,
            allowed_users=tuple(range(FIRST_CHAT, FIRST_CHAT + chats)),
            poll_timeout_s=1,
            max_concurrent_turns=concurrency,
            # the ceiling run: no bot-wide pacing (per-chat spacing stays: Telegram has it everywhere)
            global_rate_per_s=0.0 if unpaced else 25.0,
            shutdown_deadline_s=30.0,
        ),
    )


def expected_text(chat: int, k: int, tokens: int) -> str:
    """What FakeOpenAI answers: an echo padded with filler words to ``tokens`` chunks."""
    words = f"echo: chat {chat} message {k}".split(" ")
    return " ".join(words + ["tok"] * (tokens - len(words)))


def answered_at(messages: list[dict[str, Any]], text: str) -> float | None:
    """When a chat first showed ``text`` as a complete answer (a send or an edit; the fake's clock,
    CLOCK_MONOTONIC like ours)."""
    for msg in messages:
        for shown, at in zip(msg["history"], msg["times"], strict=True):
            if shown == text:
                return float(at)
    return None


async def one_run(
    llm_url: str, chats: int, messages: int, concurrency: int, tokens: int, *, unpaced: bool = False
) -> Result:
    limits = [] if unpaced else ["--limits"]
    with fake_process("tests.fakes.telegram_server", *limits) as tg_url, tempfile.TemporaryDirectory() as tmp:
        control = tg_url.removesuffix("/bot") + "/_fake"
        settings = make_settings(Path(tmp), llm_url, tg_url, chats, concurrency, unpaced)
        async with (
            httpx.AsyncClient(timeout=60) as http,
            open_store(settings) as store,
            open_agent(settings, store) as agent,
        ):
            channel = TelegramChannel(settings, agent)
            await channel.start()
            try:
                chat_ids = range(FIRST_CHAT, FIRST_CHAT + chats)
                batch = [
                    {"chat_id": c, "user_id": c, "text": f"chat {c} message {k}"}
                    for k in range(messages)
                    for c in chat_ids
                ]
                start = time.monotonic()
                (await http.post(f"{control}/push", json=batch)).raise_for_status()
                total = chats * messages
                with anyio.fail_after(600):
                    while channel.stats["answered"] < total:  # noqa: ASYNC110 - a counter, polled
                        await anyio.sleep(0.05)
                seconds = time.monotonic() - start
            finally:
                await channel.stop()
            state = (await http.get(f"{control}/state")).json()
    by_chat: dict[int, list[dict[str, Any]]] = {}
    for msg in state["messages"]:
        by_chat.setdefault(msg["chat_id"], []).append(msg)
    in_order = True
    latencies = []
    for c in range(FIRST_CHAT, FIRST_CHAT + chats):
        shown = [m["text"] for m in by_chat.get(c, []) if not m["deleted"]]
        want = [expected_text(c, k, tokens) for k in range(messages)]
        in_order &= shown == want
        for k in range(messages):
            at = answered_at(by_chat.get(c, []), want[k])
            if at is not None:
                latencies.append(at - start)
    return Result(
        concurrency,
        f"{concurrency} no limits" if unpaced else str(concurrency),
        channel.stats["answered"],
        chats * messages,
        in_order,
        seconds,
        latencies,
        state["rate_limited"],
        state["rate_limited_by"],
        state["counts"].get("sendMessage", 0),
        state["counts"].get("editMessageText", 0),
    )


async def main(args: argparse.Namespace) -> None:
    results = []
    llm_args = ["--chunk-delay", str(args.chunk_delay), "--tokens", str(args.tokens)]
    with fake_process("tests.fakes.openai_server", *llm_args) as llm_url:
        for concurrency in args.concurrency:
            results.append(await one_run(llm_url, args.chats, args.messages, concurrency, args.tokens))
        if args.ceiling:
            top = max(args.concurrency)
            results.append(await one_run(llm_url, args.chats, args.messages, top, args.tokens, unpaced=True))
    print(
        f"{args.chats} chats x {args.messages} messages; answers streamed in {args.tokens} chunks "
        f"{args.chunk_delay * 1000:.0f} ms apart; fake Bot API limits: 0.9 s per chat, 30/s overall"
    )
    print(
        f"{'concurrency':>14} {'answered':>9} {'in order':>8} {'429s':>5} {'sends':>6} {'edits':>6} "
        f"{'answers/s':>9} {'ops/s':>6} {'p50 s':>6} {'p99 s':>6} {'max s':>6}"
    )
    for r in results:
        print(
            f"{r.label:>14} {r.answers:>4}/{r.expected:<4} {'yes' if r.in_order else 'NO':>8} "
            f"{r.rate_limited:>5} {r.sends:>6} {r.edits:>6} {r.answers / r.seconds:>9.1f} "
            f"{(r.sends + r.edits) / r.seconds:>6.1f} "
            f"{pct(r.latencies, 0.5):>6.2f} {pct(r.latencies, 0.99):>6.2f} {max(r.latencies):>6.2f}"
        )
    rate = TelegramSettings().global_rate_per_s
    print(
        f"floor: {args.chats * args.messages} answers need at least one send each, "
        f"{args.chats * args.messages / rate:.1f} s at our bot-wide pacing of {rate:.0f} sends/s"
    )
    for r in results:
        if r.rate_limited:
            print(f"concurrency {r.concurrency}: 429s by cause {r.rate_limited_by}")
    print("'no limits': the fake enforces no flood limits and the channel does no bot-wide pacing (per-chat")
    print("spacing stays): the ceiling of this machine and channel, to compare the limit-bound runs with")
    if any(r.answers != r.expected or not r.in_order or r.rate_limited for r in results):
        raise SystemExit("FAILED: missing or out-of-order answers, or 429s from our own pacing")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--chats", type=int, default=100)
    parser.add_argument("--messages", type=int, default=3, help="messages per chat, sent at once")
    parser.add_argument("--tokens", type=int, default=20, help="chunks per streamed answer")
    parser.add_argument("--chunk-delay", type=float, default=0.05, help="seconds between chunks")
    parser.add_argument("--no-ceiling", dest="ceiling", action="store_false", help="skip the no-limits run")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32, 64])
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    anyio.run(main, parse_args())
