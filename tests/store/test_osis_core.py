"""The ``osis`` engine in core mode, on the strict generated-CRUD server built from agent_data.oschema.

The conformance suite already runs on it (``osis-core`` in ``tests/store/engines.py``); these tests pin
what is particular to it: the schema declares every field the engine writes, the client enforces
scope, reads a long conversation in blocks, says its mode at start, and imports with new sids.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agent.metrics import TurnMetrics
from store.api.attachments import NewAttachment
from store.api.links import IdentityLink
from store.api.store import Store
from store.api.turn import TurnReads
from store.errors import NotFound, UnsupportedOperation
from store.models import MODEL_FOR_KIND, AuditEntry, Kind, Message, Scope, UsageEntry
from store.osis.client import OsisEngine
from store.osis.oschema import SchemaError, agent_schema, parse, type_ok
from store.sqlite.engine import EmbeddedEngine
from store.transfer import export_jsonl, import_jsonl
from tests.fakes.osis_generated import GeneratedOsis
from tests.media_files import png
from tests.store.conftest import ALICE, BOB
from tests.store.osis_fixtures import client_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server() -> AsyncIterator[GeneratedOsis]:
    async with GeneratedOsis() as served:
        yield served


@pytest.fixture
async def store(server: GeneratedOsis) -> AsyncIterator[Store]:
    async with Store(OsisEngine(client_settings(server.base_url))) as opened:
        yield opened


def _bookkeeping() -> set[str]:
    return {"user_id", "context", "created_at", "updated_at", "request_key", "block"}


# -- the schema ------------------------------------------------------------------------------------


def test_the_schema_declares_every_field_of_every_model() -> None:
    schema = agent_schema()
    assert set(schema) == {kind.value for kind in Kind}
    for kind, model in MODEL_FOR_KIND.items():
        wanted = {f.name for f in dataclasses.fields(model)} - {"sid", "extra"}
        declared = set(schema[kind.value].fields)
        assert wanted <= declared, f"{kind.value} lacks {sorted(wanted - declared)}"
        assert _bookkeeping() <= declared


def test_every_field_has_a_comment() -> None:
    text = Path("store/osis/agent_data.oschema").read_text()
    inside = False
    for line in text.splitlines():
        body = line.split("#", 1)[0].strip()
        if body.endswith("{"):
            inside = True
        elif body == "}":
            inside = False
        elif inside and body:
            assert "#" in line and line.split("#", 1)[1].strip(), f"no comment: {line!r}"


def test_the_grammar() -> None:
    objects = parse(
        """
        # a comment line
        Thing [rootobject] = {
            name: str   # a trailing comment
            count?: u64
            labels: [str] ref: sid
        }
        """
    )
    fields = objects["Thing"].fields
    assert [(f.name, f.type, f.optional) for f in fields.values()] == [
        ("name", "str", False),
        ("count", "u64", True),
        ("labels", "[str]", False),
        ("ref", "sid", False),
    ]
    for bad, why in [
        ("Thing [rootobject] = { name: text }", "unknown type 'text'"),
        ("Thing [rootobject] = { name: str name: str }", "declared twice"),
        ("Thing = { name: str }", "unexpected text"),
        ("Thing [rootobject] = { name str }", "cannot read"),
    ]:
        with pytest.raises(SchemaError, match=why):
            parse(bad)
    assert type_ok("u64", 3) and not type_ok("u64", -1) and not type_ok("i64", True)
    assert type_ok("[str]", ["a"]) and not type_ok("[str]", [1]) and not type_ok("sid", "Not A Sid")
    assert type_ok("f64", 1.5) and type_ok("f64", 2) and not type_ok("f64", float("nan"))


async def test_the_engine_writes_no_field_the_schema_does_not_declare(
    server: GeneratedOsis, store: Store
) -> None:
    """Everything the agent writes, on the strict server that drops (and records) undeclared fields."""
    conv = await store.conversations.create(ALICE, "all of it", channel="web")
    await store.conversations.tag(ALICE, conv.sid, ["a", "b"])
    await store.conversations.set_model(ALICE, conv.sid, "big-model")
    images = await store.attachments.add(ALICE, conv.sid, [NewAttachment(png(), "image/png", "p.png", 4, 3)])
    async with store.turns.open(ALICE, conv.sid, "hello", channel="web", request_key="k1") as opened:
        calls = json.dumps([{"id": "c1", "name": "clock", "arguments": "{}"}])
        await store.messages.append(
            ALICE,
            Message(conversation_id=conv.sid, role="assistant", content="", tool_calls=calls, channel="web"),
        )
        await store.messages.append(
            ALICE,
            Message(
                conversation_id=conv.sid,
                role="tool",
                content="12:00",
                tool_call_id="c1",
                name="clock",
                channel="web",
                attachments=json.dumps([{"kind": "image", "id": images[0].sid}]),
            ),
        )
        opened.usage.append(UsageEntry(provider="openai", model="m", prompt_tokens=3, latency_ms=1.5))
    await store.memories.add(ALICE, "Alice keeps bees", source_conversation_id=conv.sid, source_channel="web")
    await store.records.append_audit(
        ALICE, AuditEntry(tool="clock", duration_ms=2.5, conversation_id=conv.sid)
    )
    await store.state.set(ALICE, "active", conv.sid)
    assert await store.leases.claim_once(ALICE, "update:1")
    await store.links.set(IdentityLink("telegram", "42", "alice", 1000, "cli:root"))
    await store.conversations.clear(ALICE, conv.sid)
    await store.conversations.set_summary_boundary(ALICE, conv.sid, 2)
    await store.conversations.archive(ALICE, conv.sid, True)
    assert dict(server.dropped) == {}
    assert store.engine.counters().get("core:undeclared_fields_sent", 0) == 0


async def test_a_field_the_schema_does_not_declare_is_dropped_and_nothing_breaks(
    server: GeneratedOsis, store: Store
) -> None:
    conv = await store.conversations.create(ALICE, "t")
    sent = Message(conversation_id=conv.sid, role="user", content="hi", channel="cli", extra={"mood": "x"})
    msg = await store.messages.append(ALICE, sent)
    assert server.dropped == {"AgentMessage": {"mood"}}
    assert store.engine.counters()["core:undeclared_fields_sent"] == 1
    # what the user sees is whole: the message, its seq, the history, the count
    assert (msg.seq, msg.content, msg.extra) == (1, "hi", {})
    assert [m.content for m in await store.messages.history(ALICE, conv.sid)] == ["hi"]
    assert (await store.conversations.get(ALICE, conv.sid)).message_count == 1


# -- the client does what the server does not ---------------------------------------------------------


async def test_start_up_says_the_mode_and_the_costs(
    server: GeneratedOsis, capsys: pytest.CaptureFixture[str]
) -> None:
    async with OsisEngine(client_settings(server.base_url)) as engine:
        assert engine.mode == "core"
    out = capsys.readouterr().out
    assert "osis.core_mode" in out and "only one hero-agent daemon may write to this store" in out
    for extension in ("agentlease", "count", "store.dump", "text search"):
        assert f"extension={extension}" in out or f"extension='{extension}'" in out


async def test_a_server_without_the_generated_verbs_is_refused_by_name(server: GeneratedOsis) -> None:
    del server.objects["agentattachment"]
    with pytest.raises(Exception, match=r"lacks 5 generated method\(s\).*agentattachment.delete"):
        async with OsisEngine(client_settings(server.base_url)):
            pass


async def test_another_users_or_contexts_record_is_a_missing_one(server: GeneratedOsis, store: Store) -> None:
    conv = await store.conversations.create(ALICE, "mine")
    await store.messages.append(
        ALICE, Message(conversation_id=conv.sid, role="user", content="x", channel="cli")
    )
    before = store.engine.counters().get("core:scope_refusals", 0)
    with pytest.raises(NotFound):
        await store.conversations.get(BOB, conv.sid)
    with pytest.raises(NotFound):
        await store.messages.append(
            BOB, Message(conversation_id=conv.sid, role="user", content="y", channel="cli")
        )
    assert (await store.conversations.list(BOB)).items == []
    assert not await store.engine.delete(Kind.CONVERSATION, BOB, conv.sid)
    assert store.engine.counters()["core:scope_refusals"] > before
    # the server holds alice's records in one table: every list the client sent filtered on user_id
    assert (await store.conversations.get(ALICE, conv.sid)).message_count == 1


async def test_a_long_conversation_is_read_in_blocks_with_few_calls(
    server: GeneratedOsis, store: Store
) -> None:
    conv = await store.conversations.create(ALICE, "long")
    for i in range(250):
        role = "user" if i % 2 == 0 else "assistant"
        await store.messages.append(
            ALICE, Message(conversation_id=conv.sid, role=role, content=f"m{i + 1}", channel="cli")
        )
    assert store.engine.counters()["core:seq_assigned"] == 250
    page = await store.messages.list(ALICE, conv.sid, limit=1000)
    assert [m.seq for m in page.items] == list(range(1, 251))
    server.calls.clear()
    history = await store.messages.history(ALICE, conv.sid, limit=30)
    assert [m.seq for m in history] == list(range(221, 251))
    # the newest block only (seqs 201-250)
    assert server.calls["agentmessage.list"] == 1
    server.calls.clear()
    async with store.turns.open(ALICE, conv.sid, "next", channel="cli", reads=TurnReads(20, 240)) as opened:
        assert [m.seq for m in opened.window] == list(range(241, 252))
        opened.usage.append(UsageEntry(provider="openai", model="m"))
    await store.messages.append(
        ALICE, Message(conversation_id=conv.sid, role="assistant", content="reply", channel="cli")
    )
    # docs/osis.md, "Calls per turn": the numbers a plain turn costs on a generated server
    assert dict(server.calls) == {
        "agentconversation.get": 5,
        "agentmessage.list": 4,
        "agentmessage.set": 2,
        "agentconversation.set": 2,
        # the usage block's fill, learnt once per process and kind
        "agentusageentry.list": 1,
        "agentusageentry.set": 1,
    }


async def test_many_memories_are_listed_whole(store: Store) -> None:
    for i in range(130):
        await store.memories.add(ALICE, f"fact number {i}")
    listed = [m.content for m in (await store.memories.list(ALICE, limit=1000)).items]
    assert sorted(listed) == sorted(f"fact number {i}" for i in range(130))
    found = await store.memories.search(ALICE, "number 129")
    assert found[0].content == "fact number 129"
    assert store.engine.counters()["core:block_reads"] >= 1


async def test_seq_survives_a_crash_between_the_message_and_its_count(server: GeneratedOsis) -> None:
    settings = client_settings(server.base_url)
    async with Store(OsisEngine(settings)) as store:
        conv = await store.conversations.create(ALICE, "t")
        await store.messages.append(
            ALICE, Message(conversation_id=conv.sid, role="user", content="1", channel="c")
        )
    # a process stored message 2 and died before the conversation's count: put the count back
    table = server.data["default"]["agentconversation"]
    async with Store(OsisEngine(settings)) as store:
        await store.messages.append(
            ALICE, Message(conversation_id=conv.sid, role="user", content="2", channel="c")
        )
        table[conv.sid]["message_count"] = 1
    async with Store(OsisEngine(settings)) as store:
        third = await store.messages.append(
            ALICE, Message(conversation_id=conv.sid, role="user", content="3", channel="c")
        )
        assert third.seq == 3
        assert store.engine.counters()["core:seq_repairs"] == 1
        assert [m.content for m in await store.messages.history(ALICE, conv.sid)] == ["1", "2", "3"]


async def test_rename_user_is_refused_in_one_line(store: Store) -> None:
    with pytest.raises(UnsupportedOperation, match=r"store\.rename_user"):
        await store.engine.rename_user("default", "alice", "bob")


# -- export and import --------------------------------------------------------------------------


async def test_export_from_embedded_import_into_core_and_back(server: GeneratedOsis, tmp_path: Path) -> None:
    async with Store(EmbeddedEngine(tmp_path / "src")) as source:
        conv = await source.conversations.create(ALICE, "moved", channel="web")
        for i in range(3):
            await source.messages.append(
                ALICE, Message(conversation_id=conv.sid, role="user", content=f"m{i}", channel="web")
            )
        await source.memories.add(ALICE, "fact", source_conversation_id=conv.sid)
        await source.records.append_usage(
            ALICE, UsageEntry(model="m", conversation_id=conv.sid, latency_ms=3.0)
        )
        await source.conversations.create(BOB, "bob's")
        with (tmp_path / "out.jsonl").open("w") as out:
            await export_jsonl(source.engine, out, context="default")
    async with Store(OsisEngine(client_settings(server.base_url))) as target:
        first = await import_jsonl(target.engine, tmp_path / "out.jsonl")
        again = await import_jsonl(target.engine, tmp_path / "out.jsonl")
        assert first.written == 7 and again.written == 0
        convs = (await target.conversations.list(ALICE)).items
        assert [c.title for c in convs] == ["moved"] and convs[0].sid != conv.sid
        assert [m.content for m in await target.messages.history(ALICE, convs[0].sid)] == ["m0", "m1", "m2"]
        memory = (await target.memories.list(ALICE)).items[0]
        assert memory.source_conversation_id == convs[0].sid
        assert [c.title for c in (await target.conversations.list(BOB)).items] == ["bob's"]
        nxt = await target.messages.append(
            ALICE, Message(conversation_id=convs[0].sid, role="user", content="m3", channel="cli")
        )
        assert nxt.seq == 4
        with (tmp_path / "back.jsonl").open("w") as out:
            await export_jsonl(target.engine, out, context=None)
    kinds = [json.loads(line).get("kind") for line in (tmp_path / "back.jsonl").read_text().splitlines()[1:]]
    assert kinds.count("AgentMessage") == 4 and kinds.count("AgentConversation") == 2


async def test_the_strict_server_is_strict(server: GeneratedOsis) -> None:
    url = f"http://127.0.0.1:{server.port}/hero_osis_ai/rpc"
    ctx = {"X-Hero-Context": "default"}

    async def call(method: str, params: object, headers: dict[str, str] | None = None) -> dict[str, object]:
        async with httpx.AsyncClient() as http:
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            return dict(
                (await http.post(url, json=body, headers=headers if headers is not None else ctx)).json()
            )

    def code(answer: dict[str, object]) -> object:
        error = answer.get("error")
        return error.get("code") if isinstance(error, dict) else None

    assert code(await call("agentconversation.count", {})) == -32601
    assert code(await call("agentlease.claim", {})) == -32601
    assert code(await call("agentconversation.list", {}, headers={})) == -32600
    assert code(await call("agentconversation.list", {"limit": 101})) == -32602
    assert code(await call("agentconversation.list", {"filter": {"seq__gt": 1}})) == -32602
    assert code(await call("agentconversation.list", {"order": "title"})) == -32602
    assert code(await call("agentconversation.set", {"object": {"title": 5}})) == -32602
    assert code(await call("agentconversation.get", {"sid": "zz", "user_id": "alice"})) == -32602
    discovered = (await call("rpc.discover", {}, headers={}))["result"]
    assert isinstance(discovered, dict) and len(discovered["methods"]) == 5 * len(Kind)


async def test_a_scope_outside_the_default_context_works(store: Store) -> None:
    work = Scope("work", "alice")
    conv = await store.conversations.create(work, "at work")
    with pytest.raises(NotFound):
        await store.conversations.get(ALICE, conv.sid)
    assert "work" in await store.engine.contexts()


async def test_metrics_show_what_core_mode_did(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "t")
    await store.messages.append(
        ALICE, Message(conversation_id=conv.sid, role="user", content="x", channel="c")
    )
    with pytest.raises(NotFound):
        await store.conversations.get(BOB, conv.sid)
    shown = "\n".join(TurnMetrics(store_engine=store.engine).render_lines())
    assert 'hero_store_core_fallbacks_total{engine="osis",event="seq_assigned"} 1' in shown
    assert 'hero_store_core_fallbacks_total{engine="osis",event="scope_refusals"} 1' in shown
    assert 'hero_store_core_fallbacks_total{engine="osis",event="block_reads"} 0' in shown
