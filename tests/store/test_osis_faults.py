"""The osis client against a server that stops at every stage of a call (issue 10, point 10).

A :class:`~tests.fakes.fault_proxy.FaultProxy` between the client and a real ``osis`` server breaks one
exchange at a chosen stage: before the request is read, after it, on a reused keep-alive connection,
after the server ran it (answer lost, half sent, trickled, stalled). Every call must end within its
deadline, with a correct retry or ``StoreUnavailable``, and no message may ever be stored twice.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from agent.metrics import TurnMetrics
from store.api.store import Store
from store.errors import StoreUnavailable
from store.models import Message, Scope
from store.osis.client import OsisEngine
from tests.fakes.fault_proxy import STAGES, TRICKLE_S, fault_proxy
from tests.store.osis_fixtures import ServedEngine, client_settings, embedded_server

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
SCOPE = Scope("default", "ann")
TIMEOUT_S = 1.0
#: a call's budget is (1 + retries) attempts of TIMEOUT_S plus backoff (under 1 s for 3 retries);
#: this deadline is that budget with slack for a loaded machine, and far below the ~40 s a trickled
#: answer would take if an attempt were bounded only per socket read
CALL_DEADLINE_S = 15.0
#: a long body, so that a trickled answer lasts well beyond the deadline
BODY = "once " + "x" * 600
#: the stages that break the attempt itself (``idle_close`` breaks the connection after a good answer)
ATTEMPT_STAGES = [s for s in STAGES if s != "idle_close"]


async def _stored(served: ServedEngine, conversation_id: str) -> list[Message]:
    """What the server's own engine holds, read directly (not through the proxy)."""
    return (await Store(served.engine).messages.list(SCOPE, conversation_id, limit=100)).items


async def _prepared(store: Store) -> str:
    """A conversation with one message, so the client holds a keep-alive connection that has served."""
    conv = await store.conversations.create(SCOPE, "faults")
    await store.messages.append(
        SCOPE,
        Message(conversation_id=conv.sid, role="user", content="before", channel="cli"),
        request_key="k0",
    )
    return conv.sid


async def _append_once(store: Store, conversation_id: str) -> Message:
    return await store.messages.append(
        SCOPE,
        Message(conversation_id=conversation_id, role="user", content=BODY, channel="cli"),
        request_key="k1",
    )


@pytest.mark.parametrize("stage", STAGES)
async def test_a_call_broken_at_any_stage_is_retried_and_stored_once(tmp_path: Path, stage: str) -> None:
    async with embedded_server(tmp_path / "srv") as served, fault_proxy(served.port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/hero_osis"
        async with OsisEngine(client_settings(url, retries=3, timeout_s=TIMEOUT_S)) as eng:
            store = Store(eng)
            conv = await _prepared(store)
            await proxy.arm(stage)
            with anyio.fail_after(CALL_DEADLINE_S):
                msg = await _append_once(store, conv)
            with anyio.fail_after(CALL_DEADLINE_S):  # the connection after the fault works too
                await store.messages.append(
                    SCOPE,
                    Message(conversation_id=conv, role="user", content="after", channel="cli"),
                    request_key="k2",
                )
        assert proxy.fired == [stage]
        assert msg.seq == 2 and msg.content == BODY
        stored = await _stored(served, conv)
    assert [(m.seq, m.content) for m in stored] == [(1, "before"), (2, BODY), (3, "after")]


@pytest.mark.parametrize("stage", ATTEMPT_STAGES)
async def test_without_retries_a_broken_call_fails_clearly_and_repeating_it_stores_once(
    tmp_path: Path, stage: str
) -> None:
    """With ``retries = 0`` the broken attempt is the call: it ends with ``StoreUnavailable`` within
    its deadline; the caller repeating it with the same request key finds or makes exactly one copy."""
    async with embedded_server(tmp_path / "srv") as served, fault_proxy(served.port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/hero_osis"
        async with OsisEngine(client_settings(url, retries=0, timeout_s=TIMEOUT_S)) as eng:
            store = Store(eng)
            conv = await _prepared(store)
            await proxy.arm(stage)
            outcomes: list[str] = []
            msg: Message | None = None
            # a stale keep-alive connection may cost one more failed attempt before the armed
            # connection fault is reached: at most three attempts, each within its deadline
            while msg is None and len(outcomes) < 3:
                try:
                    with anyio.fail_after(CALL_DEADLINE_S):
                        msg = await _append_once(store, conv)
                except StoreUnavailable:
                    outcomes.append("unavailable")
        assert proxy.fired == [stage]
        assert outcomes and set(outcomes) == {"unavailable"}
        assert msg is not None and msg.seq == 2
        stored = await _stored(served, conv)
    assert [(m.seq, m.content) for m in stored] == [(1, "before"), (2, BODY)]


async def test_a_trickled_answer_is_cut_at_the_attempt_deadline(tmp_path: Path) -> None:
    """httpx bounds each socket read, not the exchange: an answer arriving a byte every 50 ms never
    trips a 1 s read timeout. The client's per-attempt deadline cuts it (the root of issue 10's
    'a store call can outlive its timeout')."""
    async with embedded_server(tmp_path / "srv") as served, fault_proxy(served.port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/hero_osis"
        async with OsisEngine(client_settings(url, retries=0, timeout_s=TIMEOUT_S)) as eng:
            store = Store(eng)
            conv = await _prepared(store)
            await proxy.arm("answer_trickle")
            with anyio.fail_after(CALL_DEADLINE_S), pytest.raises(StoreUnavailable):
                await _append_once(store, conv)
            assert eng.counters() == {
                "deadline": 1,
                "timeout": 0,
                "connection": 0,
                "gateway": 0,
                "unreachable": 1,
            }
            shown = TurnMetrics(store_engine=eng).render_lines()
        assert proxy.fired == ["answer_trickle"]
        assert 'hero_store_attempts_failed_total{engine="osis",reason="deadline"} 1' in shown
        assert 'hero_store_calls_unreachable_total{engine="osis"} 1' in shown
    assert len(BODY) * TRICKLE_S > CALL_DEADLINE_S  # whole, the answer would outlast the deadline
