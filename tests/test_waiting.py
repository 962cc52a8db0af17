"""The shared wait helpers (tests/waiting.py): they return what they waited for, and fail clearly."""

from __future__ import annotations

import threading

import anyio
import pytest

from tests.waiting import until, until_sync


class Counter:
    """A condition that holds from its ``n``-th check on, counting its checks."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def __call__(self) -> list[int]:
        self.calls += 1
        return list(range(self.calls)) if self.calls >= self.n else []

    async def check(self) -> list[int]:
        await anyio.lowlevel.checkpoint()
        return self()


@pytest.mark.anyio
async def test_until_returns_the_truthy_value() -> None:
    cond = Counter(3)
    with anyio.fail_after(10):
        assert await until(cond, interval=0) == [0, 1, 2]
    assert cond.calls == 3


@pytest.mark.anyio
async def test_until_awaits_an_async_condition() -> None:
    cond = Counter(4)
    with anyio.fail_after(10):
        got = await until(cond.check, interval=0)
    assert got == [0, 1, 2, 3] and cond.calls == 4


@pytest.mark.anyio
async def test_until_never_sleeps_when_the_condition_already_holds() -> None:
    """An hour's interval: the test would hit its deadline if ``until`` paused even once."""
    cond = Counter(1)
    with anyio.fail_after(10):
        assert await until(cond, interval=3600) == [0]
        assert await until(cond.check, interval=3600) == [0, 1]
    assert cond.calls == 2


@pytest.mark.anyio
async def test_until_times_out_naming_what_and_the_last_value() -> None:
    cond = Counter(10**9)
    with anyio.fail_after(10), pytest.raises(AssertionError) as caught:
        await until(cond, timeout=0.05, what="the reply")
    assert str(caught.value) == "timed out after 0.05 s waiting for the reply; last value seen: []"
    assert cond.calls >= 1


@pytest.mark.anyio
async def test_until_cuts_an_async_check_that_hangs() -> None:
    """The timeout bounds the check itself, not only the pauses between checks."""
    seen: list[int] = []

    async def hangs() -> int:
        seen.append(len(seen))
        if len(seen) > 2:
            await anyio.sleep_forever()
        return 0

    with anyio.fail_after(10), pytest.raises(AssertionError, match=r"for the hang; last value seen: 0$"):
        await until(hangs, timeout=0.2, interval=0, what="the hang")
    assert len(seen) == 3


@pytest.mark.anyio
async def test_until_sees_a_change_made_by_another_task() -> None:
    box: dict[str, str] = {}
    checked = anyio.Event()

    def look() -> str | None:
        checked.set()
        return box.get("v")

    async def later() -> None:
        await checked.wait()  # the value changes after ``until`` found it missing
        box["v"] = "done"

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(later)
            assert await until(look, interval=0.001, what="the other task") == "done"


def test_until_sync_returns_the_value_and_never_sleeps_when_it_holds() -> None:
    cond = Counter(1)
    assert until_sync(cond, interval=3600) == [0]
    later = Counter(3)
    assert until_sync(later, interval=0) == [0, 1, 2] and later.calls == 3


def test_until_sync_sees_a_change_made_by_another_thread() -> None:
    done = threading.Event()
    threading.Timer(0.01, done.set).start()
    assert until_sync(done.is_set, what="the timer") is True


@pytest.mark.anyio
async def test_until_describes_the_state_at_the_failure_when_what_is_a_function() -> None:
    screen = ["starting"]

    def check() -> bool:
        screen[0] = "still starting"
        return False

    with anyio.fail_after(10), pytest.raises(AssertionError) as caught:
        await until(check, timeout=0.05, what=lambda: f"the prompt; screen: {screen[0]}")
    assert str(caught.value) == (
        "timed out after 0.05 s waiting for the prompt; screen: still starting; last value seen: False"
    )


def test_until_sync_times_out_naming_what_and_the_last_value() -> None:
    with pytest.raises(AssertionError) as caught:
        until_sync(lambda: None, timeout=0.05, what="the daemon")
    assert str(caught.value) == "timed out after 0.05 s waiting for the daemon; last value seen: None"


def test_until_sync_calls_what_only_on_failure() -> None:
    told: list[str] = []

    def what() -> str:
        told.append("asked")
        return "the file"

    assert until_sync(lambda: 1, what=what) == 1 and told == []
    with pytest.raises(AssertionError, match=r"waiting for the file; last value seen: 0$"):
        until_sync(lambda: 0, timeout=0.02, what=what)
    assert told == ["asked"]
