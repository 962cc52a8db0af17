"""Export/import: round trip byte-exact, idempotent import, whole-file validation with line numbers,
and the ``hero-agent export``/``import`` command handlers."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from channels.subcommands.transfer import register, run_export, run_import
from config.settings import AgentSettings, Settings, StoreSettings
from store import NewAttachment
from store.api.store import Store
from store.engine import Engine
from store.errors import Conflict, ImportFormatError, ImportRejected
from store.models import AuditEntry, Kind, Message, Record, UsageEntry
from store.sqlite.engine import EmbeddedEngine
from store.transfer import export_jsonl, import_jsonl
from tests.media_files import png
from tests.store.conftest import ALICE, ALICE_ELSEWHERE, BOB
from tests.store.engines import ENGINES

pytestmark = pytest.mark.anyio


async def populate(store: Store) -> None:
    conv = await store.conversations.create(ALICE, "Ünïcode 🌍", channel="cli", tags=["x"])
    for i in range(5):
        await store.messages.append(
            ALICE,
            Message(
                conversation_id=conv.sid,
                role="user",
                content=f'héllo {i} "quoted"\n',
                channel="web",
                extra={"legacy": {"n": i}} if i == 0 else {},
            ),
        )
    await store.conversations.clear(ALICE, conv.sid)
    replaced = await store.messages.append(
        ALICE,
        Message(conversation_id=conv.sid, role="assistant", content="replaced", channel="web", turn_id="t1"),
    )
    await store.messages.supersede(ALICE, [replaced.sid], "t2")
    await store.messages.append(
        ALICE,
        Message(
            conversation_id=conv.sid, role="assistant", content="after clear", channel="web", turn_id="t2"
        ),
    )
    await store.conversations.set_tail_digest(ALICE, conv.sid, "ab12")
    old = await store.conversations.create(ALICE, "old")
    await store.conversations.archive(ALICE, old.sid)
    bob_conv = await store.conversations.create(BOB, "bob's")
    await store.messages.append(
        BOB,
        Message(
            conversation_id=bob_conv.sid, role="user", content="bob here", channel="telegram", sender="tg:7"
        ),
    )
    await store.memories.add(ALICE, "Alice likes tea")
    await store.memories.add(BOB, "Bob likes coffee")
    await store.records.append_audit(
        ALICE, AuditEntry(tool="get_time", duration_ms=1.5, conversation_id=conv.sid)
    )
    await store.records.append_usage(ALICE, UsageEntry(model="m", prompt_tokens=3, completion_tokens=4))
    await store.state.set(ALICE, "active", conv.sid)
    await store.attachments.add(ALICE, conv.sid, [NewAttachment(png(3, 2), "image/png", "dot.png", 3, 2)])
    other = await store.conversations.create(ALICE_ELSEWHERE, "elsewhere")
    await store.messages.append(
        ALICE_ELSEWHERE,
        Message(conversation_id=other.sid, role="user", content="other context", channel="cli"),
    )


async def export_text(engine: Engine, context: str | None) -> str:
    out = io.StringIO()
    await export_jsonl(engine, out, context=context)
    return out.getvalue()


@pytest.mark.parametrize("context", ["default", None], ids=["one-context", "all"])
async def test_round_trip_is_byte_exact_and_import_idempotent(
    store: Store, tmp_path: Path, context: str | None
) -> None:
    await populate(store)
    first = await export_text(store.engine, context)
    lines = first.splitlines()
    assert json.loads(lines[0]) == {"format": "hero-agent-export", "version": 1}
    assert len(lines) > 10
    dump_file = tmp_path / "dump.jsonl"
    dump_file.write_text(first, encoding="utf-8")
    for name, factory in ENGINES.items():
        async with factory(tmp_path / f"target-{name}") as target:
            result = await import_jsonl(target, dump_file)
            assert result.read == result.written == len(lines) - 1
            assert await export_text(target, context) == first
            # the re-run and history-match fields came along, the digest still found by its index
            assert '"superseded_by":"t2"' in first and '"turn_id":"t1"' in first
            found = await Store(target).conversations.find_by_tail_digest(ALICE, "ab12")
            assert found is not None and found.title == "Ünïcode 🌍"
            again = await import_jsonl(target, dump_file)
            assert (again.read, again.written) == (len(lines) - 1, 0)
            assert await export_text(target, context) == first
            # the imported store keeps working: seq continues, new sids do not collide
            imported = Store(target)
            conv = (await imported.conversations.list(ALICE)).items[0]
            msg = await imported.messages.append(
                ALICE, Message(conversation_id=conv.sid, role="user", content="new", channel="cli")
            )
            assert msg.seq == conv.message_count + 1
            before = {c.sid for c in (await imported.conversations.list(ALICE, archived=None)).items}
            fresh = await imported.conversations.create(ALICE, "fresh")
            after = {c.sid for c in (await imported.conversations.list(ALICE, archived=None)).items}
            assert fresh.sid not in before and after == before | {fresh.sid}


def _lines(*records: Record) -> str:
    header = json.dumps({"format": "hero-agent-export", "version": 1})
    return "\n".join([header, *(json.dumps(r) for r in records)]) + "\n"


CONV: Record = {
    "kind": "AgentConversation",
    "record": {
        "sid": "0001",
        "context": "default",
        "user_id": "alice",
        "created_at": 1,
        "updated_at": 2,
        "title": "t",
        "is_archived": False,
        "message_count": 1,
    },
}
MSG: Record = {
    "kind": "AgentMessage",
    "record": {
        "sid": "0001",
        "context": "default",
        "user_id": "alice",
        "created_at": 1,
        "updated_at": 1,
        "conversation_id": "0001",
        "seq": 1,
        "role": "user",
        "content": "hi",
    },
}


def _with(base: Record, **changes: object) -> Record:
    record = {**base["record"], **changes}
    return {**base, "record": {k: v for k, v in record.items() if v is not ...}}


BAD_FILES: dict[str, tuple[Callable[[], str], int, str]] = {
    "bad-json": (lambda: _lines(CONV) + "{not json\n", 3, "not valid JSON"),
    "unknown-kind": (lambda: _lines(CONV, {"kind": "AgentSpaceship", "record": {}}), 3, "unknown kind"),
    "extra-keys": (lambda: _lines({**CONV, "oops": 1}), 2, "exactly"),
    "missing-field": (lambda: _lines(CONV, _with(MSG, content=...)), 3, "lacks the field 'content'"),
    "wrong-type": (lambda: _lines(_with(CONV, created_at="yesterday")), 2, "wrong type"),
    "invalid-context": (lambda: _lines(_with(CONV, context="Bad Context")), 2, "invalid context"),
    "invalid-sid": (lambda: _lines(_with(CONV, sid="../x")), 2, "invalid id"),
    "orphan-message": (lambda: _lines(CONV, _with(MSG, conversation_id="0zzz")), 3, "neither earlier"),
    "message-before-conversation": (lambda: _lines(MSG, CONV), 2, "neither earlier"),
    "duplicate-sid": (lambda: _lines(CONV, MSG, _with(MSG, content="other")), 4, "appears twice"),
    "duplicate-seq": (lambda: _lines(CONV, MSG, _with(MSG, sid="0002")), 4, "seq 1 appears twice"),
    "bad-seq": (lambda: _lines(CONV, _with(MSG, seq=0)), 3, "positive"),
    "bad-tail-digest": (
        lambda: _lines(_with(CONV, tail_digest=5)),
        2,
        "field 'tail_digest' has the wrong type",
    ),
    "bad-turn-id": (lambda: _lines(CONV, _with(MSG, turn_id=7)), 3, "field 'turn_id' has the wrong type"),
    "bad-superseded-by": (
        lambda: _lines(CONV, _with(MSG, superseded_by=["t"])),
        3,
        "field 'superseded_by' has the wrong type",
    ),
    "bad-audit-conversation": (
        lambda: _lines(
            CONV, {"kind": "AgentAuditEntry", "record": {**CONV["record"], "tool": "t", "conversation_id": 5}}
        ),
        3,
        "wrong type",
    ),
    "no-header": (lambda: _lines(CONV).split("\n", 1)[1], 1, "header"),
    "future-version": (lambda: _lines(CONV).replace('"version": 1', '"version": 9'), 1, "version"),
    "empty": (lambda: "", 1, "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
async def test_malformed_file_names_the_line_and_writes_nothing(
    engine: Engine, tmp_path: Path, case: str
) -> None:
    make, line, reason = BAD_FILES[case]
    path = tmp_path / "bad.jsonl"
    path.write_text(make(), encoding="utf-8")
    with pytest.raises(ImportFormatError) as caught:
        await import_jsonl(engine, path)
    assert caught.value.line == line
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"line {line}: ")
    assert await engine.contexts() == []


async def test_binary_junk_is_refused(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "junk.jsonl"
    path.write_bytes(_lines(CONV).encode() + b"\xff\xfe\x00junk\n")
    with pytest.raises(ImportFormatError) as caught:
        await import_jsonl(engine, path)
    assert caught.value.line == 3
    assert await engine.contexts() == []


async def test_message_may_join_a_conversation_already_in_the_store(engine: Engine, tmp_path: Path) -> None:
    conv_only, msg_only = tmp_path / "conv.jsonl", tmp_path / "msg.jsonl"
    conv_only.write_text(_lines(CONV))
    msg_only.write_text(_lines(MSG))
    await import_jsonl(engine, conv_only)
    result = await import_jsonl(engine, msg_only)
    assert result.written == 1
    assert (await engine.get(Kind.MESSAGE, ALICE, "0001")) == MSG["record"]
    bobs = tmp_path / "bob.jsonl"
    bobs.write_text(_lines(_with(MSG, user_id="bob", sid="0002")))
    with pytest.raises(ImportFormatError, match="line 2: message belongs to another user's conversation"):
        await import_jsonl(engine, bobs)  # alice's conversation is not bob's


# -- the file against the store: seqs, counts, limits, owners (issue 10, point 4) -------------------


async def _conversation_with(store: Store, n: int) -> str:
    """Alice's conversation 0001 in the store with ``n`` messages (seqs 1..n)."""
    conv = await store.conversations.create(ALICE, "held")
    for i in range(n):
        await store.messages.append(
            ALICE, Message(conversation_id=conv.sid, role="user", content=f"held {i}", channel="cli")
        )
    assert conv.sid == "0001"
    return conv.sid


def _message(sid: str, seq: int, **changes: object) -> Record:
    return _with(MSG, sid=sid, seq=seq, content=f"imported {seq}", **changes)


async def _refused(engine: Engine, path: Path, text: str, **kwargs: int) -> ImportRejected:
    """Import ``text`` and expect a refusal that left the store exactly as it was."""
    path.write_text(text, encoding="utf-8")
    before = await export_text(engine, None)
    with pytest.raises(ImportRejected) as caught:
        await import_jsonl(engine, path, **kwargs)
    assert await export_text(engine, None) == before
    return caught.value


async def test_a_gap_against_the_store_is_refused_naming_the_line(sid_store: Store, tmp_path: Path) -> None:
    store = sid_store
    engine = store.engine
    await _conversation_with(store, 3)
    refusal = await _refused(
        engine, tmp_path / "gap.jsonl", _lines(_message("00a1", 4), _message("00a2", 99))
    )
    assert str(refusal) == (
        "line 3: seq 99 leaves a gap in conversation '0001': seqs 5 to 98 in neither the file nor the store"
    )


async def test_a_seq_the_store_already_holds_is_refused_without_sqlite_text(
    sid_store: Store, tmp_path: Path
) -> None:
    store = sid_store
    engine = store.engine
    await _conversation_with(store, 3)
    refusal = await _refused(engine, tmp_path / "dup.jsonl", _lines(_message("00a1", 2)))
    assert str(refusal) == "line 2: seq 2 of conversation '0001' is already held by message 0002 in the store"
    # and should the store change between the check and the write, the engine says it clearly too
    with pytest.raises(Conflict, match="seq 2 of conversation '0001' is held by message 0002"):
        await engine.restore(Kind.MESSAGE, _message("00a1", 2)["record"])


async def test_moving_or_renumbering_a_stored_message_is_refused(sid_store: Store, tmp_path: Path) -> None:
    store = sid_store
    engine = store.engine
    await _conversation_with(store, 2)
    other = await store.conversations.create(ALICE, "other")
    text = _lines(_message("0001", 2), _message("0002", 1, conversation_id=other.sid))
    refusal = await _refused(engine, tmp_path / "move.jsonl", text)
    assert [str(p) for p in refusal.problems] == [
        "line 2: message 0001 is already stored at seq 1: it cannot move",
        "line 3: message 0002 is already in conversation '0001': it cannot move",
    ]


async def test_message_counts_are_recomputed(sid_store: Store, tmp_path: Path) -> None:
    store = sid_store
    engine = store.engine
    conv = await _conversation_with(store, 3)
    more = tmp_path / "more.jsonl"
    more.write_text(_lines(_message("00a1", 4), _message("00a2", 5)))
    result = await import_jsonl(engine, more)
    assert (result.read, result.written, result.recounted) == (2, 2, 1)
    assert (await store.conversations.get(ALICE, conv)).message_count == 5
    assert (
        await store.messages.append(
            ALICE, Message(conversation_id=conv, role="user", content="next", channel="cli")
        )
    ).seq == 6
    # a file whose conversation claims a wrong count is stored with the count of its messages
    claims = tmp_path / "claims.jsonl"
    claims.write_text(
        _lines(_with(CONV, sid="00b1", message_count=7), _message("00b1", 1, conversation_id="00b1"))
    )
    await import_jsonl(engine, claims)
    assert (await store.conversations.get(ALICE, "00b1")).message_count == 1
    assert (await import_jsonl(engine, claims)).written == 0  # idempotent with the corrected count


async def test_sizes_and_text_beyond_the_limits_are_refused(engine: Engine, tmp_path: Path) -> None:
    text = _lines(
        CONV,
        _with(MSG, content="x" * 101),
        _with(MSG, sid="0002", seq=2, content="nul\x00byte"),
        {"kind": "AgentMemory", "record": {**CONV["record"], "content": "y" * 101, "hash": "h"}},
        _with(CONV, sid="0003", title="t" * 201),
        _with(MSG, sid="0004", seq=3, role="wizard"),
        _with(CONV, sid="0005", tail_digest="not a digest"),
    ).replace("nul\\u0000", "nul\\u0000")
    refusal = await _refused(engine, tmp_path / "big.jsonl", text, max_message_chars=100)
    assert [str(p) for p in refusal.problems] == [
        "line 3: content of 101 characters is over the limit of 100 (agent.max_message_chars)",
        "line 4: content contains NUL characters",
        "line 5: content of 101 characters is over the limit of 100 (agent.max_message_chars)",
        "line 6: title must be at most 200 printable characters",
        "line 7: invalid role 'wizard'",
        "line 8: tail_digest must be at most 128 letters and digits",
    ]
    assert str(refusal).startswith("6 problems, nothing was imported:\nline 3: ")


async def test_a_lone_surrogate_is_refused(engine: Engine, tmp_path: Path) -> None:
    text = (
        _lines(CONV).rstrip("\n")
        + "\n"
        + json.dumps(_with(MSG, content="x")).replace('"x"', '"\\ud800"')
        + "\n"
    )
    refusal = await _refused(engine, tmp_path / "surrogate.jsonl", text)
    assert str(refusal) == "line 3: text holds a lone surrogate (not valid Unicode)"


async def test_a_sid_another_user_holds_is_refused(sid_store: Store, tmp_path: Path) -> None:
    store = sid_store
    engine = store.engine
    await _conversation_with(store, 1)
    bobs = _lines(_with(CONV, user_id="bob"), _with(MSG, user_id="bob", sid="00c1"))
    refusal = await _refused(engine, tmp_path / "bob.jsonl", bobs)
    assert (
        str(refusal.problems[0])
        == "line 2: AgentConversation 0001 already belongs to another user in 'default'"
    )


async def test_every_problem_is_listed_and_the_list_is_capped(engine: Engine, tmp_path: Path) -> None:
    text = _lines(CONV, *(_message(f"0{i:03d}", 1) for i in range(2, 150)))
    refusal = await _refused(engine, tmp_path / "many.jsonl", text)
    assert refusal.total == 147 and len(refusal.problems) == 100
    assert str(refusal).splitlines()[1] == "line 4: seq 1 appears twice in one conversation (also on line 3)"
    assert str(refusal).endswith("\n... and 47 more")


# -- the command handlers (synchronous: they run their own event loop) --------------------------------


def _settings(path: Path) -> Settings:
    return Settings(store=StoreSettings(engine="embedded", path=path))


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hero-agent")
    register(parser.add_subparsers())
    return parser.parse_args(argv)


async def _populate_at(path: Path) -> None:
    async with Store(EmbeddedEngine(path)) as store:
        await populate(store)


def test_cli_export_import_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, target = _settings(tmp_path / "src"), _settings(tmp_path / "dst")
    anyio.run(_populate_at, tmp_path / "src")
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    args = _parse("export", "--all", "--output", str(first))
    assert args.handler(args, source) == 0
    assert "exported" in capsys.readouterr().err
    args = _parse("import", "--input", str(first))
    assert args.handler(args, target) == 0
    assert "already present" in capsys.readouterr().err
    assert run_import(_parse("import", "--input", str(first)), target) == 0
    assert "imported 0 new" in capsys.readouterr().err
    assert run_export(_parse("export", "--all", "--output", str(second)), target) == 0
    assert first.read_bytes() == second.read_bytes()
    assert run_export(_parse("export", "--output", str(tmp_path / "default.jsonl")), target) == 0
    one = (tmp_path / "default.jsonl").read_text().splitlines()
    assert {json.loads(line)["record"]["context"] for line in one[1:]} == {"default"}


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = _settings(tmp_path / "store")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_lines(CONV) + "garbage\n")
    assert run_import(_parse("import", "--input", str(bad)), settings) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 3" in err and "Traceback" not in err
    assert (
        run_export(_parse("export", "--context", "Bad Name", "--output", str(tmp_path / "x")), settings) == 1
    )
    err = capsys.readouterr().err
    assert "invalid context" in err and not (tmp_path / "x").exists()
    assert run_import(_parse("import", "--input", str(tmp_path / "missing.jsonl")), settings) == 1
    assert "No such file" in capsys.readouterr().err
    assert run_export(_parse("export", "--output", str(tmp_path / "nodir" / "x.jsonl")), settings) == 1
    assert capsys.readouterr().err.startswith("hero-agent export: ")


def test_cli_import_lists_every_problem_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(
        agent=AgentSettings(max_message_chars=50), store=StoreSettings(engine="embedded", path=tmp_path / "s")
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        _lines(CONV, MSG, _with(MSG, sid="0002", seq=9), _with(MSG, sid="0003", seq=2, content="z" * 51))
    )
    assert run_import(_parse("import", "--input", str(bad)), settings) == 1
    assert capsys.readouterr().err.splitlines() == [
        "hero-agent import: 2 problems, nothing was imported:",
        "line 4: seq 9 leaves a gap in conversation '0001': seqs 3 to 8 in neither the file nor the store",
        "line 5: content of 51 characters is over the limit of 50 (agent.max_message_chars)",
    ]
    assert run_export(_parse("export", "--all", "--output", str(tmp_path / "after.jsonl")), settings) == 0
    assert len((tmp_path / "after.jsonl").read_text().splitlines()) == 1  # the header alone
