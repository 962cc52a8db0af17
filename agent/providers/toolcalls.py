"""Assembling streamed OpenAI ``delta.tool_calls`` fragments into whole calls.

The documented shape is one fragment per piece with a stable ``index``: the first carries ``id`` and
``function.name``, the rest append to ``function.arguments``. Real servers vary, and each variant is
handled here:

- a whole call (or several) in one chunk: a fragment with id, name and all arguments;
- every parallel call at ``index`` 0, told apart only by distinct ids: a new id at a known index
  starts a new call (later id-less fragments continue the newest call at that index);
- no ``index`` at all: fragments are matched by id, else continue the last call;
- the name (and id) repeated on every chunk: an equal name is not appended again;
- a name streamed in pieces before any argument: the pieces are joined;
- arguments sent as an object instead of JSON text: serialised;
- a call re-sent whole after it was streamed (same id, same complete arguments): ignored;
- no id: a stable ``call_<n>`` id is made up, since tool results must reference one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agent.providers.base import ToolCall


@dataclass(slots=True)
class _Partial:
    id: str = ""
    name: str = ""
    args: list[str] = field(default_factory=list)

    def args_text(self) -> str:
        return "".join(self.args)


class ToolCallAssembler:
    """Feed it every ``delta.tool_calls`` list in stream order; :meth:`calls` gives the result."""

    def __init__(self) -> None:
        self._calls: list[_Partial] = []
        self._by_index: dict[int, _Partial] = {}
        self._by_id: dict[str, _Partial] = {}

    def add(self, fragments: Any) -> None:
        if isinstance(fragments, dict):
            fragments = [fragments]
        if not isinstance(fragments, list):
            return
        for frag in fragments:
            if isinstance(frag, dict):
                self._add(frag)

    def _add(self, frag: dict[str, Any]) -> None:
        index = frag.get("index") if isinstance(frag.get("index"), int) else None
        call_id = str(frag.get("id") or "")
        raw_fn = frag.get("function")
        fn: dict[str, Any] = raw_fn if isinstance(raw_fn, dict) else {}
        name = str(fn.get("name") or "")
        args = fn.get("arguments")
        if args is not None and not isinstance(args, str):
            args = json.dumps(args)
        if not (call_id or name or args):
            return

        target = self._by_id.get(call_id) if call_id else None
        if target is None:
            current = self._by_index.get(index) if index is not None else None
            if current is None and index is None and not call_id and self._calls:
                current = self._calls[-1]
            if current is not None and _continues(current, call_id, name):
                target = current
        if target is None:
            target = _Partial()
            self._calls.append(target)
        elif args and call_id and name and args == target.args_text() and _is_json(args):
            return  # the whole call sent again after it was streamed

        if index is not None:
            self._by_index[index] = target
        if call_id and not target.id:
            target.id = call_id
            self._by_id[call_id] = target
        if name and name != target.name:
            # a differing name before any argument is a name streamed in pieces
            target.name = target.name + name if not target.args else target.name or name
        if args:
            target.args.append(args)

    def calls(self) -> tuple[ToolCall, ...]:
        """The assembled calls in order; empty arguments become ``{}``, missing ids are made up."""
        out = []
        for n, part in enumerate(self._calls):
            if not part.name and not part.args:
                continue
            out.append(
                ToolCall(id=part.id or f"call_{n}", name=part.name, arguments=part.args_text() or "{}")
            )
        return tuple(out)


def _continues(current: _Partial, call_id: str, name: str) -> bool:
    """Whether a fragment at ``current``'s index (or without one) belongs to ``current``."""
    if call_id and current.id and call_id != current.id:
        return False
    # same slot, no id, another name after arguments started: a parallel call from an id-less server
    return not (name and current.name and name != current.name and current.args and not call_id)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
