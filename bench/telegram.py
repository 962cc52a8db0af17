"""Many Telegram chats at once, through the real channel, against Telegram-like flood limits.

``FakeBotAPI`` (in a thread, with its own event loop) enforces limits like Telegram's: a chat gets a 429
when it receives messages or edits less than 0.9 s apart, and every chat gets one when the bot sends
more than 30 in a second; it counts those 429s. ``FakeOpenAI`` runs in its own process and streams each
answer in ``--tokens`` chunks ``--chunk-delay`` apart. The real TelegramChannel, Agent and embedded
store run in this process.

Every chat sends ``--messages`` messages at the same instant (all pushed before the bot polls). We
measure, per message, the time from the push until the chat shows the complete answer, and check that
every chat got every answer in order and that our own pacing caused no 429. Each ``--concurrency``
value (turns running at once over all chats) is a separate run on a fresh store.

    .venv/bin/python -m bench.telegram [--chats 100] [--messages 3] [--concurrency 16,32,64]
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

import anyio
import structlog

from agent.factory import open_agent
from channels.telegram import TelegramChannel
from config.settings import LLMSettings, MemorySettings, Settings, StoreSettings, TelegramSettings
from store.factory import open_store
from tests.fakes.telegram_server import TOKEN, FakeBotAPI, Limits

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
def fake_llm(tokens: int, chunk_delay: float) -> Iterator[str]:
    """FakeOpenAI in its own process, so its work never competes with the channel for the GIL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "tests.fakes.openai_server",
        "--port",
        str(port),
        "--chunk-delay",
        str(chunk_delay),
        "--tokens",
        str(tokens),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise SystemExit(f"the fake LLM server did not start: {line!r}")
        yield line.split()[1]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def make_settings(
    data: Path, llm_url: str, tg: FakeBotAPI, chats: int, concurrency: int, unpaced: bool
) -> Settings:
    return Settings(
        llm=LLMSettings(base_url=llm_url, api_key="sk-bench", model="fake-model", max_retries=0),
        memory=MemorySettings(enabled=False),
        store=StoreSettings(engine="embedded", path=data),
        telegram=TelegramSettings(
            enabled=True,
            token=TOKEN,
            api_base_url=tg.base_url,
            allowed_users=tuple(range(FIRST_CHAT, FIRST_CHAT + chats)),
            poll_timeout_s=1,
            max_concurrent_turns=concurrency,
            # the ceiling run: no bot-wide pacing, and per-chat spacing only as long as a turn
            global_rate_per_s=0.0 if unpaced else 25.0,
            edit_interval_s=0.05 if unpaced else 1.0,
            shutdown_deadline_s=30.0,
        ),
    )


def expected_text(chat: int, k: int, tokens: int) -> str:
    """What FakeOpenAI answers: an echo padded with filler words to ``tokens`` chunks."""
    words = f"echo: chat {chat} message {k}".split(" ")
    return " ".join(words + ["tok"] * (tokens - len(words)))


def answered_at(tg: FakeBotAPI, chat: int, text: str) -> float | None:
    """When the chat first showed ``text`` as a complete answer (a send or an edit)."""
    for msg in tg.bot_messages(chat):
        for shown, at in zip(msg.history, msg.times, strict=True):
            if shown == text:
                return at
    return None


async def one_run(
    llm_url: str, chats: int, messages: int, concurrency: int, tokens: int, *, unpaced: bool = False
) -> Result:
    fake = FakeBotAPI(limits=None if unpaced else Limits())
    with fake.running_in_thread() as tg, tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(Path(tmp), llm_url, tg, chats, concurrency, unpaced)
        async with open_store(settings) as store, open_agent(settings, store) as agent:
            channel = TelegramChannel(settings, agent)
            await channel.start()
            try:
                pushed: dict[tuple[int, int], float] = {}
                for k in range(messages):
                    for c in range(FIRST_CHAT, FIRST_CHAT + chats):
                        pushed[(c, k)] = time.monotonic()
                        tg.push_update(tg.text_update(c, c, f"chat {c} message {k}"))
                start = min(pushed.values())
                total = chats * messages
                with anyio.fail_after(600):
                    while channel.stats["answered"] < total:  # noqa: ASYNC110 - a counter, polled
                        await anyio.sleep(0.05)
                seconds = time.monotonic() - start
            finally:
                await channel.stop()
        in_order = True
        latencies = []
        for c in range(FIRST_CHAT, FIRST_CHAT + chats):
            texts = tg.messages_in(c)
            want = [expected_text(c, k, tokens) for k in range(messages)]
            in_order &= texts == want
            for k in range(messages):
                at = answered_at(tg, c, want[k])
                if at is not None:
                    latencies.append(at - pushed[(c, k)])
        return Result(
            concurrency,
            f"{concurrency} no limits" if unpaced else str(concurrency),
            channel.stats["answered"],
            chats * messages,
            in_order,
            seconds,
            latencies,
            tg.rate_limited,
            dict(tg.rate_limited_by),
            tg.counts["sendMessage"],
            tg.counts["editMessageText"],
        )


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


async def main(args: argparse.Namespace) -> None:
    results = []
    with fake_llm(args.tokens, args.chunk_delay) as llm_url:
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
    print("'no limits': the fake enforces no flood limits and the channel paces nothing bot-wide: the")
    print("channel's own ceiling on this machine, for comparison with the limit-bound runs above")
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
