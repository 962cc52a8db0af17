"""Waiting on a condition in tests: poll it until it holds, within a deadline.

A test never sleeps to hope that something has happened by then (on a loaded machine it has not,
and on a quiet one the sleep is time thrown away): it waits for the condition itself. ``until``
(async tests) and ``until_sync`` (sync tests) are the one way to write that, so each wait is one
line, checks the condition before its first pause (a condition that already holds costs nothing),
and fails with an ``AssertionError`` that says what was awaited and the last value seen, instead
of a bare ``TimeoutError`` out of a hand-written loop.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

import anyio

T = TypeVar("T")


#: what a wait is for: a text, or a function called only on failure (to show the state by then,
#: say a terminal's screen, which the text could only show as it was when the wait began)
What = str | Callable[[], str]


def _failure(what: What, timeout: float, last: object) -> AssertionError:
    told = what if isinstance(what, str) else what()
    return AssertionError(f"timed out after {timeout:g} s waiting for {told}; last value seen: {last!r}")


@overload
async def until(
    condition: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    what: What = "the condition",
) -> T: ...


@overload
async def until(
    condition: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    what: What = "the condition",
) -> T: ...


async def until(
    condition: Callable[[], object],
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    what: What = "the condition",
) -> object:
    """Call ``condition`` (sync, or async and awaited) until it returns a truthy value; return that value.

    It is checked at once, then every ``interval`` seconds. The ``timeout`` bounds the whole wait,
    an async condition's own awaiting included (a check that hangs is cut too). On timeout it raises
    ``AssertionError`` naming ``what`` (called then, if it is a function) and the last value the
    condition returned, so a failing test says what it was waiting for and how far it got.
    """
    last: object = None
    with anyio.move_on_after(timeout):
        while True:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            last = value
            await anyio.sleep(interval)
    raise _failure(what, timeout, last)


def until_sync(
    condition: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    what: What = "the condition",
) -> T:
    """The same for synchronous tests: poll ``condition`` against a ``time.monotonic`` deadline.

    The last check runs at the deadline, so a condition that holds by then is never reported as
    timed out; a single check that blocks is not cut (sync code cannot be), so pass conditions that
    return promptly.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _failure(what, timeout, value)
        time.sleep(min(interval, remaining))
