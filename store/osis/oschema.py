"""``agent_data.oschema``: the objects hero-agent stores in a hero_osis deployment, and its grammar.

The file next to this module is what a hero_osis operator adds to a deployment (docs/osis.md, "The
schema"); hero_osis generates ``get``/``set``/``delete``/``exist``/``list`` for each rootobject. This
module parses exactly the grammar the docs state, so that the client's core mode
(:mod:`store.osis.core`) knows the declared fields and their types, and the strict generated-CRUD test
server is built from the same file:

* ``#`` starts a comment that runs to the end of the line;
* an object is ``Name [rootobject] = { field: type ... }`` (fields separated by white space or lines);
* a field is ``name: type``, or ``name?: type`` when it may be absent;
* types: ``str``, ``bool``, ``i32``, ``i64``, ``u64``, ``f64``, ``sid`` (an object id), ``[T]`` (a list).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

from store.models import SID_RE, Kind

SCHEMA_PATH: Final = Path(__file__).with_name("agent_data.oschema")
SCALARS: Final = frozenset({"str", "bool", "i32", "i64", "u64", "f64", "sid"})
_BOUNDS: Final = {"i32": (-(2**31), 2**31 - 1), "i64": (-(2**63), 2**63 - 1), "u64": (0, 2**64 - 1)}
_OBJECT_RE = re.compile(r"([A-Z][A-Za-z0-9_]*)\s*\[rootobject\]\s*=\s*\{([^{}]*)\}", re.S)
_FIELD_RE = re.compile(r"([a-z_][a-z0-9_]*)(\?)?\s*:\s*(\[\s*[a-z0-9]+\s*\]|[a-z0-9]+)")


class SchemaError(ValueError):
    """The schema text does not follow the grammar."""


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    #: ``str`` ... or ``[str]``
    type: str
    optional: bool


@dataclass(frozen=True, slots=True)
class RootObject:
    name: str
    fields: dict[str, Field]

    @property
    def rpc_name(self) -> str:
        return self.name.lower()


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def parse(text: str) -> dict[str, RootObject]:
    """The rootobjects of an oschema text, by name; :class:`SchemaError` on anything else."""
    body = _strip_comments(text)
    out: dict[str, RootObject] = {}
    end = 0
    for m in _OBJECT_RE.finditer(body):
        if body[end : m.start()].strip():
            raise SchemaError(f"unexpected text before {m.group(1)}: {body[end : m.start()].strip()[:40]!r}")
        end = m.end()
        fields: dict[str, Field] = {}
        pos = 0
        inner = m.group(2)
        for fm in _FIELD_RE.finditer(inner):
            if inner[pos : fm.start()].strip():
                raise SchemaError(f"{m.group(1)}: cannot read {inner[pos : fm.start()].strip()[:40]!r}")
            pos = fm.end()
            name, optional, ftype = fm.group(1), bool(fm.group(2)), fm.group(3).replace(" ", "")
            if ftype.strip("[]") not in SCALARS:
                raise SchemaError(f"{m.group(1)}.{name}: unknown type {ftype!r}")
            if name in fields:
                raise SchemaError(f"{m.group(1)}.{name} is declared twice")
            fields[name] = Field(name, ftype, optional)
        if inner[pos:].strip():
            raise SchemaError(f"{m.group(1)}: cannot read {inner[pos:].strip()[:40]!r}")
        if m.group(1) in out:
            raise SchemaError(f"{m.group(1)} is declared twice")
        out[m.group(1)] = RootObject(m.group(1), fields)
    if body[end:].strip():
        raise SchemaError(f"unexpected text at the end: {body[end:].strip()[:40]!r}")
    return out


@cache
def agent_schema() -> dict[str, RootObject]:
    """The shipped ``agent_data.oschema``: one rootobject per :class:`~store.models.Kind`."""
    objects = parse(SCHEMA_PATH.read_text(encoding="utf-8"))
    missing = [k.value for k in Kind if k.value not in objects]
    if missing:
        raise SchemaError(f"agent_data.oschema lacks {', '.join(missing)}")
    return objects


def fields_of(kind: Kind) -> dict[str, Field]:
    return agent_schema()[kind.value].fields


def type_ok(ftype: str, value: Any) -> bool:
    """``value`` (decoded JSON) is a value of the oschema type ``ftype``."""
    if ftype.startswith("["):
        return isinstance(value, list) and all(type_ok(ftype[1:-1], v) for v in value)
    if ftype == "str":
        return isinstance(value, str)
    if ftype == "sid":
        return isinstance(value, str) and bool(SID_RE.match(value))
    if ftype == "bool":
        return isinstance(value, bool)
    if ftype == "f64":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    low, high = _BOUNDS[ftype]
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
