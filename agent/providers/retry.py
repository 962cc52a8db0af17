"""Retries, the stream idle timeout and fallback models, wrapped around any :class:`Provider`.

Policy (SPEC 9):

- retryable errors (:class:`ProviderRateLimited`, :class:`ProviderUnavailable`: 408/409/429/5xx,
  timeouts, connection errors, dropped streams) are retried up to ``max_retries`` times with
  jittered exponential backoff (``retry_base_delay_s`` doubling, capped at ``retry_max_delay_s``);
  a server's ``Retry-After`` / ``retry-after-ms`` is waited at least, within the same cap;
- each retry is announced with a :class:`RetryNotice` event before the wait, so a channel can show
  "retrying (2/3)" while the user waits for a first token;
- never once text or tool calls reached the caller: a retry would repeat or contradict what the
  user already saw, so the error propagates (reasoning blocks are held back until then, so a retry
  never duplicates them either);
- ``stream_idle_timeout_s``: no event for that long counts as a dropped stream (retryable). The turn
  deadline is the agent's, not ours;
- when a model is exhausted with a retryable error, or the server does not know it (404), the
  ``fallback_models`` are tried in order, each with its own retry budget;
- auth and quota errors, and other refusals (400...), are never retried and never fall back: another
  attempt or another model on the same account cannot fix them.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import replace

import anyio
import structlog

from agent.errors import ProviderError, ProviderUnavailable
from agent.providers.base import (
    ChatRequest,
    Provider,
    ProviderEvent,
    ReasoningBlock,
    RetryNotice,
    StreamEnd,
    TextChunk,
    ToolCallsReady,
)
from agent.providers.http import ProviderModelNotFound
from config.settings import LLMSettings

log = structlog.get_logger()

Sleep = Callable[[float], Awaitable[None]]


class RetryingProvider(Provider):
    """Adds the retry, idle-timeout and fallback policy above to ``inner``."""

    def __init__(
        self,
        inner: Provider,
        settings: LLMSettings,
        *,
        rng: random.Random | None = None,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self._settings = settings
        self._rng = rng or random.Random()
        self._sleep = sleep

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def ping(self) -> None:
        await self.inner.ping()

    async def list_models(self) -> list[str] | None:
        return await self.inner.list_models()

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry number ``attempt + 1``: equal jitter over an exponential step."""
        s = self._settings
        step = min(s.retry_max_delay_s, s.retry_base_delay_s * (2.0**attempt))
        delay = step / 2 + self._rng.uniform(0, step / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, s.retry_max_delay_s)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ProviderEvent]:
        models = [request.model, *(m for m in self._settings.fallback_models if m != request.model)]
        shown = _Shown()
        for n, model in enumerate(models):
            try:
                async with aclosing(self._with_retries(replace(request, model=model), shown)) as events:
                    async for event in events:
                        yield event
                return
            except ProviderError as exc:
                last = n == len(models) - 1
                if shown.any or last or not (exc.retryable or isinstance(exc, ProviderModelNotFound)):
                    raise
                log.warning(
                    "provider.fallback", model=model, next_model=models[n + 1], error=type(exc).__name__
                )

    async def _with_retries(self, request: ChatRequest, shown: _Shown) -> AsyncGenerator[ProviderEvent, None]:
        attempt = 0
        while True:
            held: list[ProviderEvent] = []
            try:
                async with aclosing(self._idle_guarded(request)) as guarded:
                    async for event in guarded:
                        if not shown.any and isinstance(event, ReasoningBlock):
                            held.append(event)
                            continue
                        if isinstance(event, TextChunk | ToolCallsReady | StreamEnd):
                            for early in held:
                                yield early
                            held.clear()
                            shown.any = shown.any or not isinstance(event, StreamEnd)
                        yield event
                return
            except ProviderError as exc:
                if shown.any or not exc.retryable or attempt >= self._settings.max_retries:
                    raise
                delay = self.backoff(attempt, exc.retry_after)
                attempt += 1
                log.warning(
                    "provider.retry",
                    model=request.model,
                    attempt=attempt,
                    delay_s=round(delay, 3),
                    status=exc.status,
                    error=type(exc).__name__,
                )
                reason = str(exc) or type(exc).__name__
            # outside the except block: the consumer's code runs while we are suspended here
            yield RetryNotice(attempt, self._settings.max_retries, round(delay, 3), reason)
            await self._sleep(delay)

    async def _idle_guarded(self, request: ChatRequest) -> AsyncGenerator[ProviderEvent, None]:
        """The inner stream, failing when it stays silent for ``stream_idle_timeout_s``."""
        idle = self._settings.stream_idle_timeout_s
        limit = idle if idle > 0 else math.inf  # 0 disables the idle timeout
        events = self.inner.stream(request)
        try:
            while True:
                with anyio.move_on_after(limit) as scope:
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        return
                if scope.cancelled_caught:
                    raise ProviderUnavailable(f"the LLM provider sent nothing for {idle:g} s", retryable=True)
                yield event  # outside the cancel scope: the consumer's time is not ours to limit
        finally:
            await _aclose(events)


class _Shown:
    """Whether anything the user sees (text or tool calls) was yielded, across models."""

    __slots__ = ("any",)

    def __init__(self) -> None:
        self.any = False


async def _aclose(events: AsyncIterator[ProviderEvent]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        with anyio.CancelScope(shield=True):
            await close()
