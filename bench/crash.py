"""Crash soak: kill -9 under load, then check that nothing was lost, doubled or left dangling.

Three scenarios, in rotation, one kill per round:

* ``serve``: ``hero-agent serve`` (embedded store) with concurrent SSE chats of several users, each
  looping normal, slow (streamed over ~2 s) and tool-calling turns (``http_fetch`` of a page that
  takes ~1 s); the daemon is killed with SIGKILL at a random moment and restarted on the same data dir;
* ``ask``: ``hero-agent ask`` processes sharing one data dir (two of them on one conversation at
  once); a random subset is killed, and the next round's asks continue the same conversations;
* ``osis``: ``hero-agent osis serve`` under two daemons that both serve the same users (turns of one
  conversation alternate between them); the store service is killed and restarted.

The LLM is the fake OpenAI server of ``tests/fakes`` (in this process), which records what the model
was sent. After the rounds every conversation gets one more turn, then the stores are read. Printed:

* rounds, acknowledged turns (an SSE ``done``, or an ``ask`` that exited 0);
* lost: an acknowledged turn whose user message or answer is not stored;
* duplicated: a user message stored twice, or a user message answered twice;
* dangling: tool calls without their result in what the model was sent (and, separately, two user
  messages in a row sent to the model);
* unmarked: stored user messages with no answer or marker, and stored tool calls without a result;
* blocked: per round and conversation, the time from the restart (the daemon or store answering
  again; for ``ask``, the launch, minus the same-moment start-up of an ``ask`` on a conversation
  that nothing blocks) to the next turn's start; the longest is printed. A turn that does not start
  within ``--deadline`` seconds is counted as stuck.

    .venv/bin/python -m bench.crash [--rounds 102] [--seed 1] [--json]

Exit status 1 when anything is lost, duplicated, dangling, unmarked or stuck.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import itertools
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, Python puts bench/ first on sys.path, where bench/agent.py and bench/store.py would
# shadow the `agent` and `store` packages: put the repository root there instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import anyio
import httpx
import structlog

from store import EmbeddedEngine, Message, Scope, Store
from tests.fakes.openai_server import FakeOpenAI, reply_text, reply_tool_calls
from tests.fakes.sse_scripts import Reply

ROOT = Path(__file__).resolve().parents[1]
HERO = str(Path(sys.executable).parent / "hero-agent")
CONTEXT = "default"
KINDS = ("normal", "slow", "tool")
SLOW_PAGE_S = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- what the model was sent ------------------------------------------------------------------------


@dataclass
class ModelLog:
    """Fed by the fake LLM's responder (its own thread): when each turn's text first reached the model,
    and what was wrong in the histories it was sent."""

    arrivals: dict[str, float] = field(default_factory=dict)
    dangling: int = 0
    user_runs: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, messages: list[dict[str, Any]]) -> None:
        open_calls: set[str] = set()
        previous = ""
        for msg in messages:
            role = msg.get("role", "")
            if role == "tool":
                open_calls.discard(str(msg.get("tool_call_id")))
                previous = role
                continue
            with self.lock:
                self.dangling += len(open_calls)
                self.user_runs += role == "user" and previous == "user"
            open_calls = {str(c.get("id")) for c in msg.get("tool_calls") or []}
            previous = role
        with self.lock:
            self.dangling += len(open_calls)


def responder(log: ModelLog, slow_url: str) -> Any:
    calls = itertools.count()

    def respond(body: dict[str, Any]) -> Reply | None:
        messages = body.get("messages") or []
        log.check(messages)
        last = messages[-1] if messages else {}
        user: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        text = str(user.get("content") or "")
        with log.lock:
            log.arrivals.setdefault(text, time.monotonic())
        if last.get("role") == "tool":
            return reply_text(f"fetched for {text}", chunks=3)
        if text.startswith("slow"):
            return reply_text(f"slow answer to {text}", chunks=8, chunk_delay=0.25)
        if text.startswith("tool"):
            args = json.dumps({"url": slow_url})
            return reply_tool_calls([(f"call_{next(calls)}", "http_fetch", args)], text="Looking.")
        return None  # the fake's echo

    return respond


class SlowPage(http.server.BaseHTTPRequestHandler):
    """A page that takes ``SLOW_PAGE_S`` to answer: the tool call a kill can cut."""

    def do_GET(self) -> None:
        time.sleep(SLOW_PAGE_S)
        body = b"<html><body><p>slow page</p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # the daemon that fetched it may have been killed meanwhile
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


# -- the ledger ---------------------------------------------------------------------------------------


@dataclass
class Acked:
    data_dir: Path
    user: str
    conversation: str
    text: str
    #: the answer's message id (SSE ``done``); "" for ``ask``, which prints only the text
    message_id: str = ""


@dataclass
class Ledger:
    rounds: Counter[str] = field(default_factory=Counter)
    acked: list[Acked] = field(default_factory=list)
    blocked: list[tuple[str, float]] = field(default_factory=list)
    stuck: int = 0
    #: (data dir, user, conversation): every conversation the soak used
    conversations: set[tuple[Path, str, str]] = field(default_factory=set)


# -- processes ------------------------------------------------------------------------------------------


@dataclass
class Rig:
    tmp: Path
    llm_url: str
    slow_url: str
    deadline: float
    rng: random.Random
    ledger: Ledger = field(default_factory=Ledger)
    log: ModelLog = field(default_factory=ModelLog)
    #: ``[store] writer`` of the embedded stores: "auto" (the default: the writer process for the
    #: daemons, the thread for the one-shot ``ask``), "thread" or "process"
    writer: str = "auto"

    def config(
        self, name: str, *, web_port: int = 0, tokens: dict[str, str] | None = None, osis: str = ""
    ) -> Path:
        lines = [
            "[telegram]\nenabled = false",
            "[memory]\nenabled = false",
            '[llm]\nmodel = "fake-model"\nmax_retries = 0',
            '[tools]\nhttp_allow_cidrs = ["127.0.0.0/8"]\nhttp_timeout_s = 10',
            '[logging]\nlevel = "warning"',
        ]
        if web_port:
            token_lines = "".join(f'"{t}" = "{u}"\n' for t, u in (tokens or {}).items())
            lines.append(f"[web]\nport = {web_port}\nshutdown_deadline_s = 1\n[web.tokens]\n{token_lines}")
        else:
            lines.append("[web]\nenabled = false")
        if osis:
            lines.append(f'[store]\nengine = "osis"\nurl = "{osis}"\ntimeout_s = 2')
        else:
            lines.append(f'[store]\nwriter = "{self.writer}"')
        path = self.tmp / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def env(self, data_dir: Path) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HERO_AGENT_DATA_DIR": str(data_dir),
            "OPENAI_BASE_URL": self.llm_url,
            "OPENAI_API_KEY": "sk-crash-bench",
        }

    def spawn(self, args: list[str], config: Path, data_dir: Path, log_name: str) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{log_name}.log").open("ab") as log:
            return subprocess.Popen(
                [HERO, *args, "--config", str(config)],
                env=self.env(data_dir),
                stdout=subprocess.PIPE if args[0] == "ask" else log,
                stderr=log,
                cwd=ROOT,
            )


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            kill(proc)


async def wait_ready(url: str, proc: subprocess.Popen[bytes], deadline: float) -> float:
    """Poll ``url`` until it answers (any HTTP status); the monotonic time it did."""
    async with httpx.AsyncClient(timeout=2) as client:
        with anyio.fail_after(deadline):
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"a hero-agent process exited with {proc.returncode} (see the logs)")
                try:
                    await client.get(url)
                    return time.monotonic()
                except httpx.TransportError:
                    await anyio.sleep(0.05)


# -- SSE chats ------------------------------------------------------------------------------------------


@dataclass
class ChatResult:
    started: float | None = None
    message_id: str = ""
    broken: bool = False


async def chat(client: httpx.AsyncClient, base: str, token: str, conversation: str, text: str) -> ChatResult:
    out = ChatResult()
    name = ""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"message": text, "conversation_id": conversation}
    try:
        async with client.stream("POST", f"{base}/api/chat", json=body, headers=headers) as resp:
            if resp.status_code != 200:
                out.broken = True
                return out
            async for line in resp.aiter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    if name == "start":
                        out.started = time.monotonic()
                    elif name == "done":
                        out.message_id = str(json.loads(line[5:])["message_id"])
    except httpx.HTTPError:
        out.broken = True
    return out


async def chat_round(
    rig: Rig,
    label: str,
    round_no: int,
    users: Sequence[tuple[str, str, str, tuple[str, ...]]],
    ready_at: float,
    cut: Any,
) -> None:
    """Every user loops turns until ``cut()`` (the kill) has run; ``users``: (user, token, conversation,
    base urls of the daemons; the i-th user's turn n goes to daemon (i + n) % count). The kill comes a
    random moment after every conversation's first turn of the round has started (or the deadline
    passed)."""
    first: dict[str, float] = {}
    killed = anyio.Event()
    everyone = anyio.Event()

    async def loop(
        offset: int, user: str, token: str, conversation: str, bases: tuple[str, ...], data_dir: Path
    ) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            for n in itertools.count():
                kind = KINDS[(round_no + n + len(first)) % len(KINDS)]
                text = f"{kind}: {label} r{round_no} {user} n{n}"
                url = bases[(offset + n) % len(bases)]
                result = await chat(client, url, token, conversation, text)
                if result.started is not None and conversation not in first:
                    first[conversation] = result.started
                    if len(first) == len(users):
                        everyone.set()
                if result.message_id:
                    rig.ledger.acked.append(Acked(data_dir, user, conversation, text, result.message_id))
                if killed.is_set():
                    return
                if result.broken or result.started is None:
                    await anyio.sleep(0.05)

    async with anyio.create_task_group() as tg:
        for offset, (user, token, conversation, bases) in enumerate(users):
            data_dir = rig.tmp / label
            rig.ledger.conversations.add((data_dir, user, conversation))
            tg.start_soon(loop, offset, user, token, conversation, bases, data_dir)
        with anyio.move_on_after(rig.deadline):
            await everyone.wait()
        await anyio.sleep(rig.rng.uniform(0.0, 2.5))
        await anyio.to_thread.run_sync(cut)
        killed.set()
    for _, _, conversation, _ in users:
        if conversation in first:
            rig.ledger.blocked.append((label, first[conversation] - ready_at))
        else:
            rig.ledger.stuck += 1
    rig.ledger.rounds[label] += 1


async def create_conversations(base: str, users: list[tuple[str, str]]) -> list[str]:
    async with httpx.AsyncClient(timeout=30) as client:
        out = []
        for user, token in users:
            resp = await client.post(
                f"{base}/api/conversations",
                json={"title": f"soak {user}"},
                headers={"Authorization": f"Bearer {token}"},
            )
            resp.raise_for_status()
            out.append(str(resp.json()["id"]))
        return out


# -- scenarios ------------------------------------------------------------------------------------------


class ServeScenario:
    label = "serve"

    def __init__(self, rig: Rig, users: int = 4) -> None:
        self.rig = rig
        self.data = rig.tmp / self.label
        self.port = free_port()
        self.users = [(f"s{i}", f"token-s{i}") for i in range(users)]
        self.config = rig.config(self.label, web_port=self.port, tokens={t: u for u, t in self.users})
        self.base = f"http://127.0.0.1:{self.port}"
        self.conversations: list[str] = []

    async def start(self) -> tuple[subprocess.Popen[bytes], float]:
        proc = self.rig.spawn(["serve"], self.config, self.data, self.label)
        return proc, await wait_ready(f"{self.base}/healthz", proc, self.rig.deadline)

    async def round(self, round_no: int) -> None:
        proc, ready = await self.start()
        if not self.conversations:
            self.conversations = await create_conversations(self.base, self.users)
        users = [(u, t, c, (self.base,)) for (u, t), c in zip(self.users, self.conversations, strict=True)]
        await chat_round(self.rig, self.label, round_no, users, ready, lambda: kill(proc))

    async def final(self) -> None:
        proc, _ = await self.start()
        try:
            await final_turns(self.rig, self.label, self.base, self.users, self.conversations)
        finally:
            stop(proc)


class OsisScenario:
    label = "osis"

    def __init__(self, rig: Rig, users: int = 4) -> None:
        self.rig = rig
        self.data = rig.tmp / self.label
        self.osis_port = free_port()
        self.osis_url = f"http://127.0.0.1:{self.osis_port}/hero_osis"
        self.osis_config = rig.config("osis-server")
        self.users = [(f"o{i}", f"token-o{i}") for i in range(users)]
        tokens = {t: u for u, t in self.users}
        self.ports = [free_port(), free_port()]
        self.configs = [
            rig.config(f"osis-daemon{i}", web_port=p, tokens=tokens, osis=self.osis_url)
            for i, p in enumerate(self.ports)
        ]
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.server: subprocess.Popen[bytes] | None = None
        self.conversations: list[str] = []

    async def start_server(self) -> float:
        args = ["osis", "serve", "--host", "127.0.0.1", "--port", str(self.osis_port)]
        self.server = self.rig.spawn(args, self.osis_config, self.data, "osis-server")
        return await wait_ready(f"{self.osis_url}_ai/rpc", self.server, self.rig.deadline)

    async def round(self, round_no: int) -> None:
        ready = await self.start_server()
        if not self.daemons:
            for i, config in enumerate(self.configs):
                daemon = self.rig.spawn(["serve"], config, self.data, f"osis-daemon{i}")
                self.daemons.append(daemon)
                await wait_ready(f"http://127.0.0.1:{self.ports[i]}/healthz", daemon, self.rig.deadline)
            self.conversations = await create_conversations(f"http://127.0.0.1:{self.ports[0]}", self.users)
            ready = time.monotonic()
        # turn n of user i goes to daemon (i + n) % 2: one conversation, two processes
        bases = tuple(f"http://127.0.0.1:{p}" for p in self.ports)
        users = [(u, t, c, bases) for (u, t), c in zip(self.users, self.conversations, strict=True)]
        server = self.server
        assert server is not None
        await chat_round(self.rig, self.label, round_no, users, ready, lambda: kill(server))

    async def final(self) -> None:
        await self.start_server()
        try:
            base = f"http://127.0.0.1:{self.ports[0]}"
            await final_turns(self.rig, self.label, base, self.users, self.conversations)
        finally:
            for daemon in self.daemons:
                stop(daemon)
            if self.server is not None:
                stop(self.server)


class AskScenario:
    label = "ask"

    def __init__(self, rig: Rig, users: int = 3) -> None:
        self.rig = rig
        self.data = rig.tmp / self.label
        self.config = rig.config(self.label)
        self.users = [f"a{i}" for i in range(users)]
        self.conversations: dict[str, str] = {}
        self.controls = itertools.count()

    async def prepare(self) -> None:
        async with Store(EmbeddedEngine(self.data)) as store:
            for user in [*self.users, "control"]:
                conv = await store.conversations.create(Scope(CONTEXT, user), f"soak {user}", channel="cli")
                self.conversations[user] = conv.sid

    def ask(self, user: str, text: str) -> subprocess.Popen[bytes]:
        args = ["ask", "--user", user, "--conversation", self.conversations[user], text]
        return self.rig.spawn(args, self.config, self.data, self.label)

    async def round(self, round_no: int) -> None:
        if not self.conversations:
            await self.prepare()
        launched = time.monotonic()
        jobs: list[tuple[str, str, subprocess.Popen[bytes]]] = []
        # the first user's conversation gets two asks at once (serialized by the turn lock)
        for n, user in enumerate([self.users[0], *self.users]):
            kind = KINDS[(round_no + n) % len(KINDS)]
            text = f"{kind}: ask r{round_no} {user} n{n}"
            jobs.append((user, text, self.ask(user, text)))
            self.rig.ledger.conversations.add((self.data, user, self.conversations[user]))
        control_text = f"normal: ask control {next(self.controls)}"
        control = self.ask("control", control_text)
        await self.wait_arrivals([text for _, text, _ in jobs] + [control_text])
        await anyio.sleep(self.rig.rng.uniform(0.0, 2.0))
        doomed = self.rig.rng.sample(range(len(jobs)), self.rig.rng.randint(1, len(jobs)))
        for i in doomed:
            kill(jobs[i][2])
        for user, text, proc in jobs:
            out, _ = proc.communicate(timeout=self.rig.deadline)
            if proc.returncode == 0 and out.strip():
                self.rig.ledger.acked.append(Acked(self.data, user, self.conversations[user], text))
        control.communicate(timeout=self.rig.deadline)
        startup = self.rig.log.arrivals.get(control_text, launched) - launched
        # per conversation, its first turn to start (of the two asks on one conversation, the second
        # waits for the first by design)
        first: dict[str, float | None] = {}
        for user, text, _ in jobs:
            arrived = self.rig.log.arrivals.get(text)
            known = first.get(user)
            first[user] = arrived if known is None else known if arrived is None else min(known, arrived)
        for arrived in first.values():
            if arrived is None:
                self.rig.ledger.stuck += 1
            else:
                self.rig.ledger.blocked.append((self.label, max(0.0, arrived - launched - startup)))
        self.rig.ledger.rounds[self.label] += 1

    async def wait_arrivals(self, texts: list[str]) -> None:
        # polled: the arrivals are recorded by the fake LLM's thread, which cannot set an anyio.Event
        with anyio.move_on_after(self.rig.deadline):
            while not all(t in self.rig.log.arrivals for t in texts):  # noqa: ASYNC110
                await anyio.sleep(0.05)

    async def final(self) -> None:
        for user in self.users:
            proc = self.ask(user, f"normal: ask final {user}")
            proc.communicate(timeout=self.rig.deadline)


async def final_turns(
    rig: Rig, label: str, base: str, users: list[tuple[str, str]], conversations: list[str]
) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        for (user, token), conversation in zip(users, conversations, strict=True):
            await chat(client, base, token, conversation, f"normal: {label} final {user}")


# -- the verdict ------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    messages: int = 0
    lost: int = 0
    duplicated: int = 0
    unmarked_user: int = 0
    unmarked_tool: int = 0
    markers: int = 0
    seq_gaps: int = 0


async def verify(ledger: Ledger) -> Verdict:
    out = Verdict()
    stored: dict[tuple[Path, str, str], list[Message]] = {}
    for data_dir, user, conversation in sorted(ledger.conversations):
        async with Store(EmbeddedEngine(data_dir)) as store:
            stored[(data_dir, user, conversation)] = await all_messages(
                store, Scope(CONTEXT, user), conversation
            )
    for messages in stored.values():
        check_conversation(messages, out)
    for acked in ledger.acked:
        messages = stored[(acked.data_dir, acked.user, acked.conversation)]
        users = [m for m in messages if m.role == "user" and m.content == acked.text]
        if not users:
            out.lost += 1
        elif acked.message_id:
            out.lost += not any(m.sid == acked.message_id for m in messages)
        else:
            out.lost += not answered(messages, users[0])
    return out


async def all_messages(store: Store, scope: Scope, conversation: str) -> list[Message]:
    out: list[Message] = []
    cursor = None
    while True:
        page = await store.messages.list(scope, conversation, limit=1000, cursor=cursor)
        out += page.items
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


def check_conversation(messages: list[Message], out: Verdict) -> None:
    out.messages += len(messages)
    out.seq_gaps += [m.seq for m in messages] != list(range(1, len(messages) + 1))
    texts = Counter(m.content for m in messages if m.role == "user")
    out.duplicated += sum(n - 1 for n in texts.values())
    out.markers += sum(1 for m in messages if m.status == "interrupted")
    for i, msg in enumerate(messages):
        if msg.role != "user":
            continue
        turn = list(itertools.takewhile(lambda m: m.role != "user", messages[i + 1 :]))
        finals = [m for m in turn if m.role == "assistant" and not m.tool_calls]
        out.unmarked_user += not finals
        out.duplicated += max(0, sum(1 for m in finals if m.status == "complete") - 1)
        results = {m.tool_call_id for m in turn if m.role == "tool"}
        for m in turn:
            if m.role == "assistant" and m.tool_calls:
                out.unmarked_tool += sum(1 for c in json.loads(m.tool_calls) if c["id"] not in results)


def answered(messages: list[Message], user: Message) -> bool:
    after = itertools.takewhile(lambda m: m.role != "user", messages[messages.index(user) + 1 :])
    return any(m.role == "assistant" and not m.tool_calls and m.status == "complete" for m in after)


# -- main -------------------------------------------------------------------------------------------------


async def soak(rig: Rig, rounds: int) -> Verdict:
    scenarios: list[Any] = [ServeScenario(rig), AskScenario(rig), OsisScenario(rig)]
    try:
        for n in range(rounds):
            scenario = scenarios[n % len(scenarios)]
            await scenario.round(n // len(scenarios))
            print(f"round {n + 1}/{rounds} ({scenario.label}) acked={len(rig.ledger.acked)}", file=sys.stderr)
        for scenario in scenarios:
            await scenario.final()
    finally:
        for scenario in scenarios:
            for proc in [*getattr(scenario, "daemons", []), getattr(scenario, "server", None)]:
                if proc is not None:
                    kill(proc)
    return await verify(rig.ledger)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=102, help="kills, rotating serve / ask / osis")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=60.0, help="longest wait for a turn to start")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    parser.add_argument(
        "--writer",
        choices=("auto", "thread", "process"),
        default="auto",
        help="[store] writer of the embedded stores (default auto, as the product's: the daemons get"
        " writer processes, each of which must die with its daemon; the one-shot asks the thread)",
    )
    args = parser.parse_args()

    # the bench's own store reads (the verdict) log nothing below warnings
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tmp = Path(tempfile.mkdtemp(prefix="hero-crash-"))
    page = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowPage)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    fake = FakeOpenAI()
    with fake.running_in_thread():
        rig = Rig(
            tmp,
            fake.base_url,
            f"http://127.0.0.1:{page.server_port}/page",
            args.deadline,
            random.Random(args.seed),
            writer=args.writer,
        )
        fake.responder = responder(rig.log, rig.slow_url)
        started = time.monotonic()
        verdict = anyio.run(soak, rig, args.rounds)
        elapsed = time.monotonic() - started
    page.shutdown()
    leftover = writers_left(tmp)
    report(rig, verdict, elapsed, args, leftover)
    if not args.keep:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    else:
        print(f"data and logs kept in {tmp}")
    bad = verdict.lost + verdict.duplicated + rig.log.dangling + verdict.unmarked_user + verdict.unmarked_tool
    raise SystemExit(1 if bad or rig.ledger.stuck or verdict.seq_gaps or leftover else 0)


def writers_left(tmp: Path, wait_s: float = 10.0) -> int:
    """Writer processes (``[store] writer = "process"``) of this soak's data dirs still running once
    every daemon has ended: each must end with its daemon, a ``kill -9`` included (waits up to
    ``wait_s`` for them to notice)."""

    def count() -> int:
        found = 0
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                args = cmdline.read_bytes().split(b"\0")
                if b"store.sqlite.child" in args and any(str(tmp).encode() in a for a in args):
                    found += 1
        return found

    deadline = time.monotonic() + wait_s
    while (left := count()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def report(rig: Rig, verdict: Verdict, elapsed: float, args: argparse.Namespace, leftover: int) -> None:
    ledger = rig.ledger
    blocked = {
        label: max((b for lbl, b in ledger.blocked if lbl == label), default=0.0)
        for label in ("serve", "ask", "osis")
    }
    figures = {
        "rounds": sum(ledger.rounds.values()),
        "rounds_by_scenario": dict(ledger.rounds),
        "acknowledged_turns": len(ledger.acked),
        "lost": verdict.lost,
        "duplicated": verdict.duplicated,
        "dangling_sent_to_model": rig.log.dangling,
        "user_runs_sent_to_model": rig.log.user_runs,
        "unmarked_user": verdict.unmarked_user,
        "unmarked_tool": verdict.unmarked_tool,
        "interrupted_markers": verdict.markers,
        "seq_gaps": verdict.seq_gaps,
        "stored_messages": verdict.messages,
        "stuck": ledger.stuck,
        "blocked_max_s": round(max(blocked.values()), 2),
        "blocked_max_s_by_scenario": {k: round(v, 2) for k, v in blocked.items()},
        "elapsed_s": round(elapsed, 1),
        "writer": rig.writer,
        "writer_processes_left": leftover,
    }
    print(
        f"rounds={figures['rounds']} {dict(ledger.rounds)} "
        f"acknowledged turns={figures['acknowledged_turns']} "
        f"stored messages={verdict.messages} in {elapsed:.0f} s"
    )
    print(
        f"lost={verdict.lost} duplicated={verdict.duplicated} "
        f"dangling (sent to the model)={rig.log.dangling} "
        f"two users in a row (sent)={rig.log.user_runs} unmarked: user={verdict.unmarked_user} "
        f"tool={verdict.unmarked_tool} (interrupted markers stored={verdict.markers}) "
        f"seq gaps={verdict.seq_gaps}"
    )
    print(
        f"longest blocked after a restart: {figures['blocked_max_s']:.2f} s "
        + " ".join(f"{k}={v:.2f}s" for k, v in blocked.items())
        + f"; stuck (no start within {args.deadline:g} s)={ledger.stuck}"
    )
    print(f"writer: {rig.writer}; writer processes left once every daemon ended: {leftover}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
