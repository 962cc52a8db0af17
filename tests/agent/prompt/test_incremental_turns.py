"""The extended view through real turns (real Agent, embedded store, fake OpenAI over HTTP): each
request carries exactly the whole derivation of the window it was built from, the common turn
extends last turn's view, and /clear, a re-run and a compaction start a new one (``/metrics``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.core import Agent
from agent.events import CommandOutput, Done, TurnFailed
from agent.prompt.history import history_from
from agent.prompt.incremental import HISTORY_STATS, INCREMENTAL, NEW
from agent.providers.base import ChatMessage
from agent.rerun import Rerun, RerunKind
from store import Role
from tests.agent.conftest import (
    SCOPE,
    Kit,
    all_messages,
    is_marked,
    main_requests,
    running,
    turn,
    with_agent,
)
from tests.fakes.openai_server import FakeOpenAI, reply_error, reply_text, reply_tool_calls
from tests.fakes.sse_scripts import COMPACTION_MARKER, MEMORY_MARKER, Reply

pytestmark = pytest.mark.anyio

LIMIT = 40  # above the catch-up read (32): turns join new messages to the cached window


def _sent(body: dict[str, Any]) -> list[tuple[str, str, str, tuple[str, ...]]]:
    return [
        (
            m["role"],
            m.get("content") or "",
            m.get("tool_call_id", ""),
            tuple(c["id"] for c in m.get("tool_calls") or ()),
        )
        for m in body["messages"]
        if m["role"] != "system"
    ]


def _model(messages: list[ChatMessage]) -> list[tuple[str, str, str, tuple[str, ...]]]:
    return [(m.role, m.content, m.tool_call_id, tuple(c.id for c in m.tool_calls)) for m in messages]


async def _expected(agent: Agent, cid: str, user_sid: str) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """history_from of the window the turn answering ``user_sid`` was built from (read back whole)."""
    stored = await agent.store.messages.history(SCOPE, cid, limit=1000)
    upto = next(m.seq for m in stored if m.sid == user_sid)
    window = [m for m in stored if m.seq <= upto][-LIMIT:]
    return _model(history_from(window).messages)


def _tools_every_third(body: dict[str, Any]) -> Reply | None:
    """Every third user message gets a tool call first; the rest the echo."""
    if is_marked(body, MEMORY_MARKER) or is_marked(body, COMPACTION_MARKER):
        return None
    msgs = body["messages"]
    users = sum(1 for m in msgs if m["role"] == "user")
    if msgs[-1]["role"] == "user" and users % 3 == 0:
        return reply_tool_calls([(f"call_{users}", "count", json.dumps({"q": users}))])
    if msgs[-1]["role"] == "tool":
        return reply_text(f"counted for {users}")
    return None


async def test_turns_extend_the_view_and_send_exactly_the_whole_derivation(
    kit: Kit, fake: FakeOpenAI
) -> None:
    settings = with_agent(kit.settings, history_limit=LIMIT)
    fake.responder = _tools_every_third
    async with running(settings, kit.registry()) as agent:
        before = dict(HISTORY_STATS.builds)
        cid = ""
        for i in range(24):  # ~80 messages: the 40-message window slides
            events = await turn(agent, f"message {i}", conversation_id=cid or None)
            done = events[-1]
            assert isinstance(done, Done), done
            cid = done.conversation_id
            user = max(
                (m for m in await all_messages(agent.store, cid) if m.role == Role.USER), key=lambda m: m.seq
            )
            first_call = next(r for r in main_requests(fake) if _sent(r)[-1][1] == f"message {i}")
            assert _sent(first_call) == await _expected(agent, cid, user.sid)
        assert HISTORY_STATS.builds[NEW] - before[NEW] == 1  # the conversation's first turn
        assert HISTORY_STATS.builds[INCREMENTAL] - before[INCREMENTAL] == 23
        text = "\n".join(agent.metrics.render_lines())
        assert (
            f'hero_prompt_history_builds_total{{path="incremental"}} {HISTORY_STATS.builds[INCREMENTAL]}'
            in text
        )
        assert f"hero_prompt_history_messages_walked_total {HISTORY_STATS.walked}" in text


async def test_clear_rerun_and_compaction_start_a_new_view(kit: Kit, fake: FakeOpenAI) -> None:
    settings = with_agent(kit.settings, history_limit=LIMIT)
    async with running(settings, kit.registry()) as agent:
        done = (await turn(agent, "one"))[-1]
        assert isinstance(done, Done)
        cid = done.conversation_id
        await turn(agent, "two", conversation_id=cid)
        new = HISTORY_STATS.builds[NEW]
        incremental = HISTORY_STATS.builds[INCREMENTAL]

        last_user = max(
            (m for m in await all_messages(agent.store, cid) if m.role == Role.USER), key=lambda m: m.seq
        )
        events = await turn(
            agent, "two", conversation_id=cid, rerun=Rerun(RerunKind.REGENERATE, last_user.sid)
        )
        assert isinstance(events[-1], Done), events[-1]
        assert HISTORY_STATS.builds[NEW] == new + 1  # a re-run drops the cached window first
        assert _sent(main_requests(fake)[-1]) == await _expected(agent, cid, last_user.sid)

        await turn(agent, "three", conversation_id=cid)
        assert HISTORY_STATS.builds[INCREMENTAL] == incremental + 1

        [compacted] = await turn(agent, "/compact", conversation_id=cid)
        assert isinstance(compacted, CommandOutput) and compacted.data == {"compacted": True}
        await turn(agent, "four", conversation_id=cid)
        assert HISTORY_STATS.builds[NEW] == new + 2  # the window after the summary, read whole
        await turn(agent, "five", conversation_id=cid)
        assert HISTORY_STATS.builds[INCREMENTAL] == incremental + 2
        assert [m[1] for m in _sent(main_requests(fake)[-1]) if m[0] == "user"] == ["three", "four", "five"]

        await turn(agent, "/clear", conversation_id=cid)
        await turn(agent, "six", conversation_id=cid)
        assert HISTORY_STATS.builds[NEW] == new + 3
        assert [m[1] for m in _sent(main_requests(fake)[-1])] == ["six"]


async def test_a_repeated_request_marks_its_failed_answer_and_extends_the_view(
    kit: Kit, fake: FakeOpenAI
) -> None:
    """A request repeated after its answer failed is answered again: the failed attempt is marked
    superseded in the open tail of the kept view (no whole derivation) and not sent."""
    settings = with_agent(kit.settings, history_limit=LIMIT)
    failing = True

    def responder(body: dict[str, Any]) -> Reply | None:
        if is_marked(body, MEMORY_MARKER) or is_marked(body, COMPACTION_MARKER):
            return None
        if failing and body["messages"][-1].get("content") == "three":
            return reply_error(500)
        return None

    fake.responder = responder
    async with running(settings, kit.registry()) as agent:
        done = (await turn(agent, "one"))[-1]
        assert isinstance(done, Done)
        cid = done.conversation_id
        await turn(agent, "two", conversation_id=cid)
        failed = (await turn(agent, "three", conversation_id=cid, request_key="k3"))[-1]
        assert isinstance(failed, TurnFailed), failed
        failing = False
        incremental = HISTORY_STATS.builds[INCREMENTAL]
        events = await turn(agent, "three", conversation_id=cid, request_key="k3")
        assert isinstance(events[-1], Done), events[-1]
        assert HISTORY_STATS.builds[INCREMENTAL] == incremental + 1
        stored = await all_messages(agent.store, cid)
        assert [m.status for m in stored if m.superseded_by] == ["error"]  # the failed attempt, marked
        users = [m for m in stored if m.role == Role.USER]
        assert [u.content for u in users] == ["one", "two", "three"]  # answered again, not stored twice
        assert _sent(main_requests(fake)[-1]) == await _expected(agent, cid, users[-1].sid)
