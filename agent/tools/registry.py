"""The tool registry: names, schemas, and one ``execute`` that never raises for a tool failure.

Every failure the model can cause or recover from (an unknown tool, arguments that are not JSON or
break the schema, a timeout, an exception inside the tool) becomes ``ToolResult(ok=False,
content="error: ...")`` worded so the model can act on it. Results are made storable (characters no
store takes replaced) and capped in size with a visible note (:mod:`agent.tools.storable`). Every
execution, ok or not and also a cancelled one, is written to the audit log.
Cancellation itself propagates: a ``/stop`` must stop the turn, not turn into a tool result.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import anyio
import structlog

# jsonschema (already required by mcp) ships no type information
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import SchemaError, best_match  # type: ignore[import-untyped]
from jsonschema.validators import validator_for  # type: ignore[import-untyped]

from agent.providers.base import ToolCall, ToolSpec
from agent.tools.base import Tool, ToolCaller, ToolError, ToolResult
from agent.tools.health import ServerHealth
from agent.tools.storable import ResultCounts, storable_result
from store import AuditEntry, StoreError

log = structlog.get_logger()

TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: argument keys whose values never reach the audit log or the logs
SECRET_KEY_RE = re.compile(
    r"(passw|secret|token|api[_-]?key|authori[sz]ation|^auth$|credential|cookie|private[_-]?key)", re.I
)
AUDIT_ARGUMENTS_CHARS = 2_000
AUDIT_SUMMARY_CHARS = 500
#: an audit write may not hold a cancelled turn for longer than this
AUDIT_DEADLINE_S = 5.0


class ToolRegistry:
    """The tools one agent offers the model, looked up by name."""

    def __init__(self, tools: list[Tool] | tuple[Tool, ...] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        #: :meth:`specs`, built once per set of tools (the specs carry the providers' memos)
        self._specs: tuple[ToolSpec, ...] | None = None
        self._validators: dict[str, Any] = {}
        #: the tool servers behind some of the tools (MCP), by name: for /readyz and /metrics
        self.servers: dict[str, ServerHealth] = {}
        #: results repaired by :func:`~agent.tools.storable.storable_result`, shown in ``/metrics``
        self.result_counts = ResultCounts()
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        """Add a tool; a bad name, a duplicate name or an invalid schema is a programming error."""
        if not TOOL_NAME_RE.match(tool.name):
            raise ValueError(f"invalid tool name {tool.name!r}: use 1-64 of a-z A-Z 0-9 _ -")
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is already registered")
        # MCP servers may declare an older draft in "$schema"; without one, 2020-12 applies.
        validator_cls = validator_for(tool.parameters, default=Draft202012Validator)
        try:
            validator_cls.check_schema(tool.parameters)
        except SchemaError as exc:
            raise ValueError(f"tool {tool.name!r} has an invalid parameters schema: {exc.message}") from None
        self._tools[tool.name] = tool
        self._specs = None
        self._validators[tool.name] = validator_cls(tool.parameters)

    def has(self, name: str) -> bool:
        return name in self._tools

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def specs(self) -> tuple[ToolSpec, ...]:
        """What the provider advertises to the model, in registration order; the same objects until a
        tool is registered (their token estimate and request JSON are then computed once)."""
        if self._specs is None:
            self._specs = tuple(ToolSpec(t.name, t.description, t.parameters) for t in self._tools.values())
        return self._specs

    async def execute(
        self, call: ToolCall, ctx: ToolCaller, *, timeout_s: float, max_result_chars: int
    ) -> ToolResult:
        """Run one tool call. Never raises for tool failures; cancellation propagates (and is audited)."""
        started = time.perf_counter()
        result: ToolResult | None = None
        try:
            # the one place every tool's output passes (built-in, MCP, http_fetch, error texts
            # quoting an exception): made storable here, the turn can store it whatever it holds
            raw = await self._execute(call, ctx, timeout_s)
            result = storable_result(call.name, raw, max_result_chars, self.result_counts)
            return result
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            # Shielded: a cancelled turn still leaves its audit entry (bounded, so it cannot hang).
            with anyio.CancelScope(shield=True), anyio.move_on_after(AUDIT_DEADLINE_S):
                await self._audit(call, ctx, result, duration_ms)

    async def _execute(self, call: ToolCall, ctx: ToolCaller, timeout_s: float) -> ToolResult:
        tool = self._tools.get(call.name)
        if tool is None:
            available = ", ".join(sorted(self._tools)) or "none"
            return _error(f"unknown tool {call.name!r}. Available tools: {available}")
        args, problem = parse_arguments(call.arguments)
        if problem:
            return _error(f"invalid arguments for {tool.name}: {problem}. Send a JSON object.")
        assert args is not None
        problem = self._schema_problem(tool.name, args)
        if problem:
            return _error(f"invalid arguments for {tool.name}: {problem}")
        try:
            with anyio.fail_after(timeout_s) as deadline:
                result = await tool.run(args, ctx)
        except TimeoutError as exc:
            if deadline.cancel_called:  # our deadline, not a TimeoutError raised inside the tool
                return _error(f"{tool.name} timed out after {timeout_s:g} s")
            return _error(f"{tool.name} failed: timed out ({exc or 'TimeoutError'})")
        except ToolError as exc:
            return _error(str(exc) or f"{tool.name} failed")
        except StoreError as exc:
            detail = str(exc) if exc.user_safe else type(exc).__name__
            return _error(f"{tool.name} failed: {detail}")
        except Exception as exc:  # a tool bug must not crash the turn; the model sees what happened
            log.warning("tool.crashed", tool=tool.name, error_type=type(exc).__name__)
            return _error(f"{tool.name} failed: {type(exc).__name__}: {exc}")
        return result

    def _schema_problem(self, name: str, args: dict[str, Any]) -> str:
        error = best_match(self._validators[name].iter_errors(args))
        if error is None:
            return ""
        where = "/".join(str(p) for p in error.absolute_path)
        return f"{error.message} (at '{where}')" if where else error.message

    async def _audit(
        self, call: ToolCall, ctx: ToolCaller, result: ToolResult | None, duration_ms: float
    ) -> None:
        if result is None:
            ok, error, summary = False, "cancelled", ""
        else:
            ok = result.ok
            error = "" if result.ok else _clip(result.content, AUDIT_SUMMARY_CHARS)
            summary = _clip(result.content, AUDIT_SUMMARY_CHARS)
        entry = AuditEntry(
            tool=call.name,
            arguments=_clip(redact_arguments(call.arguments), AUDIT_ARGUMENTS_CHARS),
            result_summary=summary,
            ok=ok,
            error=error,
            duration_ms=round(duration_ms, 3),
            conversation_id=ctx.conversation_id,
            channel=ctx.channel,
        )
        log.info(
            "tool.executed",
            tool=call.name,
            ok=ok,
            duration_ms=entry.duration_ms,
            conversation_id=ctx.conversation_id,
            channel=ctx.channel,
            context=ctx.scope.context,
            argument_names=_argument_names(call.arguments),
            error=error[:200] if error else None,
        )
        try:
            await ctx.store.records.append_audit(ctx.scope, entry)
        except Exception as exc:  # the audit log must not turn a finished tool call into a crash
            log.warning("tool.audit_failed", tool=call.name, error_type=type(exc).__name__)


def parse_arguments(text: str) -> tuple[dict[str, Any] | None, str]:
    """The arguments object of a call, or a problem description. Empty text and ``null`` mean ``{}``
    (models send either for tools without parameters)."""
    if not text.strip() or text.strip() == "null":
        return {}, ""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {type(value).__name__}"
    return value, ""


def redact_arguments(text: str) -> str:
    """The arguments as JSON text with the values of secret-looking keys replaced (recursively)."""
    args, problem = parse_arguments(text)
    if problem or args is None:
        return text
    return json.dumps(_redact(args), ensure_ascii=False, sort_keys=True)


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "[redacted]" if SECRET_KEY_RE.search(str(k)) else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _argument_names(text: str) -> list[str]:
    args, _ = parse_arguments(text)
    return sorted(args)[:20] if args else []


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _error(message: str) -> ToolResult:
    return ToolResult(content=f"error: {message}", ok=False)
