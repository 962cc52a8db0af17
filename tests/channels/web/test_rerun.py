"""The re-run step on ``POST /api/chat``: ``retry_of``, ``regenerate_of`` and ``edit_of`` answer (or
replace) the conversation's last user message; what the earlier attempt left stays stored, marked
``superseded_by``, and never reaches the model again."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from store import Message, Scope
from tests.channels.web.conftest import Web, chat
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.sse_scripts import reply_error

pytestmark = pytest.mark.anyio

ALICE = Scope("default", "alice")


async def _messages(web: Web, conversation_id: str) -> list[Message]:
    return (await web.store.messages.list(ALICE, conversation_id)).items


def _sent(fake: FakeOpenAI) -> list[tuple[str, str]]:
    """(role, text) of the non-system messages of the provider's last chat request."""
    body: dict[str, Any] = [r for r in fake.requests if r.get("messages")][-1]
    return [(m["role"], str(m.get("content"))) for m in body["messages"] if m["role"] != "system"]


async def _first_turn(alice: httpx.AsyncClient, fake: FakeOpenAI, *, fail: bool) -> tuple[str, str]:
    await chat(alice, {"message": "warm up"})
    if fail:
        fake.enqueue(reply_error(500))
    events = await chat(alice, {"message": "what is two and two?"})
    start = events[0][1]
    assert events[-1][0] == ("error" if fail else "done")
    return start["conversation_id"], start["user_message_id"]


async def test_retry_answers_the_stored_message_and_marks_the_failure(
    web: Web, alice: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    conv, user = await _first_turn(alice, fake, fail=True)
    [failed] = [m for m in await _messages(web, conv) if m.status == "error"]
    events = await chat(alice, {"retry_of": user, "conversation_id": conv})
    start, done = events[0][1], events[-1]
    assert done[0] == "done" and done[1]["text"] == "echo: what is two and two?"
    assert start["user_message_id"] == user  # the stored message, answered again
    msgs = await _messages(web, conv)
    assert [m.content for m in msgs if m.role == "user"] == ["warm up", "what is two and two?"]
    [marked] = [m for m in msgs if m.sid == failed.sid]
    assert marked.superseded_by == start["turn_id"] and marked.status == "error"
    assert msgs[-1].sid == done[1]["message_id"] and msgs[-1].turn_id == start["turn_id"]
    assert not msgs[-1].superseded_by
    # the model saw the user's message last, and nothing of the failed attempt
    assert _sent(fake) == [
        ("user", "warm up"),
        ("assistant", "echo: warm up"),
        ("user", "what is two and two?"),
    ]
    # the REST view shows the mark (the page collapses those messages)
    listed = (await alice.get(f"/api/conversations/{conv}/messages")).json()["items"]
    assert [m["superseded_by"] for m in listed if m["id"] == failed.sid] == [start["turn_id"]]
    metrics = (await alice.get("/metrics")).text
    assert 'hero_turn_reruns_total{channel="web",kind="retry"} 1' in metrics


async def test_retry_of_an_answered_message_is_refused_and_changes_nothing(
    web: Web, alice: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    conv, user = await _first_turn(alice, fake, fail=False)
    before = await _messages(web, conv)
    calls = len(fake.requests)
    events = await chat(alice, {"retry_of": user, "conversation_id": conv})
    assert events[-1][0] == "error" and events[-1][1]["code"] == "conflict"
    assert "regenerate" in events[-1][1]["message"]
    assert await _messages(web, conv) == before
    assert len(fake.requests) == calls


async def test_regenerate_replaces_a_complete_answer(
    web: Web, alice: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    conv, user = await _first_turn(alice, fake, fail=False)
    old = (await _messages(web, conv))[-1]
    events = await chat(alice, {"regenerate_of": user, "conversation_id": conv})
    start, done = events[0][1], events[-1][1]
    msgs = await _messages(web, conv)
    assert len(msgs) == 5 and msgs[-1].sid == done["message_id"]
    assert [m.superseded_by for m in msgs] == ["", "", "", start["turn_id"], ""]
    assert msgs[3].sid == old.sid and msgs[3].status == "complete"
    assert _sent(fake)[-2:] == [("assistant", "echo: warm up"), ("user", "what is two and two?")]
    # the next turn does not see the replaced answer either
    await chat(alice, {"message": "thanks", "conversation_id": conv})
    assert _sent(fake)[-3:] == [
        ("user", "what is two and two?"),
        ("assistant", "echo: what is two and two?"),
        ("user", "thanks"),
    ]
    assert sum(1 for role, _ in _sent(fake) if role == "assistant") == 2


async def test_edit_replaces_the_last_user_message_as_a_new_turn(
    web: Web, alice: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    conv, user = await _first_turn(alice, fake, fail=False)
    events = await chat(
        alice, {"edit_of": user, "message": "what is three and three?", "conversation_id": conv}
    )
    start, done = events[0][1], events[-1][1]
    assert done["text"] == "echo: what is three and three?"
    msgs = await _messages(web, conv)
    assert [(m.role, m.content, m.superseded_by) for m in msgs] == [
        ("user", "warm up", ""),
        ("assistant", "echo: warm up", ""),
        ("user", "what is two and two?", start["turn_id"]),
        ("assistant", "echo: what is two and two?", start["turn_id"]),
        ("user", "what is three and three?", ""),
        ("assistant", "echo: what is three and three?", ""),
    ]
    assert start["user_message_id"] == msgs[4].sid != user
    assert _sent(fake) == [
        ("user", "warm up"),
        ("assistant", "echo: warm up"),
        ("user", "what is three and three?"),
    ]


async def test_only_the_last_user_message_can_be_re_run(
    web: Web, alice: httpx.AsyncClient, fake: FakeOpenAI
) -> None:
    conv, _ = await _first_turn(alice, fake, fail=False)
    first_user = (await _messages(web, conv))[0].sid
    before = await _messages(web, conv)
    for body in (
        {"regenerate_of": first_user, "conversation_id": conv},
        {"edit_of": first_user, "message": "changed", "conversation_id": conv},
    ):
        events = await chat(alice, body)
        assert events[-1][0] == "error" and events[-1][1]["code"] == "conflict", events
    assert await _messages(web, conv) == before


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"retry_of": "zz99", "conversation_id": "CONV"}, 404, "not_found"),
        ({"retry_of": "USER", "conversation_id": "CONV", "message": "x"}, 400, "invalid_field"),
        ({"retry_of": "USER"}, 400, "missing_field"),
        ({"retry_of": "USER", "regenerate_of": "USER", "conversation_id": "CONV"}, 400, "invalid_field"),
        ({"edit_of": "USER", "conversation_id": "CONV"}, 400, "missing_field"),
        ({"edit_of": "USER", "message": "/help", "conversation_id": "CONV"}, 400, "invalid_field"),
        ({"regenerate_of": "ANSWER", "conversation_id": "CONV"}, 404, "not_found"),
    ],
)
async def test_bad_re_run_requests_are_refused_before_anything_is_stored(
    web: Web, alice: httpx.AsyncClient, fake: FakeOpenAI, body: dict[str, str], status: int, code: str
) -> None:
    conv, user = await _first_turn(alice, fake, fail=False)
    before = await _messages(web, conv)
    ids = {"CONV": conv, "USER": user, "ANSWER": before[-1].sid}
    resp = await alice.post("/api/chat", json={k: ids.get(v, v) for k, v in body.items()})
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    assert await _messages(web, conv) == before
