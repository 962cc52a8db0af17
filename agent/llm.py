"""One LLM call with its accounting: a usage entry per call and the token-estimate correction.

Every call the agent makes (a turn step, memory extraction, compaction) goes through :class:`LLM`, so
the usage log holds every call, failed ones included (``ok=False``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from agent.errors import ProviderError
from agent.prompt.history import TokenCalibrator, estimate_request
from agent.providers.base import (
    ChatRequest,
    CollectedResponse,
    Provider,
    RetryNotice,
    TextChunk,
)
from store import Scope, Store, StoreError, UsageEntry

log = structlog.get_logger()

TextSink = Callable[[str], Awaitable[None]]
RetrySink = Callable[[RetryNotice], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CallSite:
    """Where a call's usage is booked."""

    scope: Scope
    conversation_id: str
    channel: str


class LLM:
    """The provider plus usage accounting and per-model token calibration."""

    def __init__(self, provider: Provider, store: Store, calibrator: TokenCalibrator | None = None) -> None:
        self.provider = provider
        self.store = store
        self.calibrator = calibrator or TokenCalibrator()

    async def call(
        self,
        request: ChatRequest,
        site: CallSite,
        on_text: TextSink | None = None,
        *,
        defer_usage: list[UsageEntry] | None = None,
        on_retry: RetrySink | None = None,
    ) -> CollectedResponse:
        """Stream one response, handing each text chunk to ``on_text`` as it arrives and each retry
        announcement to ``on_retry``.

        Raises :class:`~agent.errors.ProviderError` (after the provider's own retries); the failed
        call is still booked in the usage log. With ``defer_usage`` the entry is appended to that list
        instead of written, for the caller to write off the reply path (:meth:`book`).
        """
        out = CollectedResponse()
        started = time.perf_counter()
        try:
            async for ev in self.provider.stream(request):
                out.take(ev)
                if isinstance(ev, TextChunk) and ev.text and on_text is not None:
                    await on_text(ev.text)
                elif isinstance(ev, RetryNotice) and on_retry is not None:
                    await on_retry(ev)
        except ProviderError as exc:
            latency = (time.perf_counter() - started) * 1000
            log.warning(
                "llm.failed",
                model=request.model,
                status=exc.status,
                error=str(exc),
                detail=exc.detail or None,
                ms=round(latency, 1),
            )
            entry = self._entry(site, request.model, 0, 0, latency, ok=False)
            if defer_usage is not None:
                defer_usage.append(entry)
            else:
                await self.book(site.scope, [entry])
            raise
        out.finish()
        out.model = out.model or request.model
        latency = (time.perf_counter() - started) * 1000
        if out.prompt_tokens:
            self.calibrator.observe(request.model, estimate_request(request), out.prompt_tokens)
        entry = self._entry(site, out.model, out.prompt_tokens, out.completion_tokens, latency, ok=True)
        if defer_usage is not None:
            defer_usage.append(entry)
        else:
            await self.book(site.scope, [entry])
        return out

    def _entry(
        self, site: CallSite, model: str, prompt: int, completion: int, latency_ms: float, *, ok: bool
    ) -> UsageEntry:
        return UsageEntry(
            provider=self.provider.name,
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            latency_ms=round(latency_ms, 3),
            conversation_id=site.conversation_id,
            channel=site.channel,
            ok=ok,
        )

    async def book(self, scope: Scope, entries: list[UsageEntry]) -> None:
        """Write usage entries; a store failure is logged, never raised (accounting must not turn a
        delivered answer or the provider's own error into a store error)."""
        for entry in entries:
            try:
                await self.store.records.append_usage(scope, entry)
            except StoreError as exc:
                log.warning("llm.usage_not_booked", error=str(exc), model=entry.model)
