"""One step's tool calls: run concurrently, results in call order, repeats refused.

The registry turns every tool failure into an error result; this module adds what only the turn
knows: which calls repeat the previous step, and the started/finished events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

import anyio

from agent.events import ToolFinished, ToolStarted, TurnEvent
from agent.providers.base import ToolCall
from agent.tools.base import ToolCaller, ToolResult
from agent.tools.registry import ToolRegistry
from config.settings import AgentSettings

REPEAT_RESULT = (
    "error: you already made this exact call (same tool, same arguments) in the previous step; it was not "
    "run again. Do not repeat it: answer with what you have."
)
SUMMARY_CHARS = 200
ERROR_SUMMARY_CHARS = 2000


def signature(call: ToolCall) -> tuple[str, str]:
    """Name and canonical arguments: ``{"q": 1}`` and ``{ "q":1 }`` are the same call."""
    try:
        args = json.dumps(json.loads(call.arguments or "{}"), sort_keys=True)
    except ValueError:
        args = call.arguments.strip()
    return call.name, args


def summary(content: str, ok: bool = True) -> str:
    """One line for channels: a success is cut short, a failure's reason is kept whole (up to a
    bound that only a tool dumping a whole body into its error reaches)."""
    limit = SUMMARY_CHARS if ok else ERROR_SUMMARY_CHARS
    line = " ".join(content.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


async def run_calls(
    registry: ToolRegistry | None,
    calls: tuple[ToolCall, ...],
    ctx: ToolCaller,
    settings: AgentSettings,
    *,
    repeated: set[str],
    emit: Callable[[TurnEvent], Awaitable[None]],
    on_result: Callable[[ToolCall, ToolResult, float], None],
) -> list[ToolResult]:
    """Run every call concurrently (a repeated one is answered without running); the results come
    back in call order whatever order they finish in. ``on_result`` sees each as it finishes, with
    its duration in ms."""
    results: list[ToolResult] = [ToolResult("", ok=False)] * len(calls)
    for call in calls:
        await emit(ToolStarted(call.id, call.name, call.arguments))

    async def run_one(i: int, call: ToolCall) -> None:
        started = time.perf_counter()
        if call.id in repeated:
            result = ToolResult(REPEAT_RESULT, ok=False)
        elif registry is None:
            result = ToolResult(f"error: unknown tool {call.name!r}: no tools are available", ok=False)
        else:
            result = await registry.execute(
                call, ctx, timeout_s=settings.tool_timeout_s, max_result_chars=settings.max_tool_result_chars
            )
        results[i] = result
        ms = round((time.perf_counter() - started) * 1000, 3)
        on_result(call, result, ms)
        await emit(ToolFinished(call.id, call.name, result.ok, summary(result.content, result.ok), ms))

    async with anyio.create_task_group() as tg:
        for i, call in enumerate(calls):
            tg.start_soon(run_one, i, call)
    return results
