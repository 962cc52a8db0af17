"""Named prepared statements inside the one simple-protocol message of a batch.

A batch is ONE message of SQL text (:mod:`store.postgres.batch`); without preparation the server parses
and plans every statement of it every time, and for a turn that planning cost more than running the
statements (1.1 ms of planning against 0.7 ms of execution per turn, by ``pg_stat_statements``). So
each connection prepares the statements it runs with SQL ``PREPARE`` (the parameters as ``$n``,
declared with the types psycopg's literals have in the unprepared text: :func:`literal_type`) and runs
them as ``EXECUTE name(literals)``, the literals quoted by psycopg as before. The server then plans
a statement once per connection (a generic plan once it has seen that the parameters do not change
the plan), and the message is still one write and one round trip: the missing ``PREPARE``s go at its
start, before the ``BEGIN``.

``PREPARE`` is not transactional: a prepared statement survives the rollback of the batch that made it.
What a connection holds is kept beside it (:class:`Prepared`, a weak map: a new connection of the
pool starts empty). A message that failed in a way that says nothing of its ``PREPARE``s (any error
but a ``hero_fail`` of a statement after them) makes the next message on that connection begin with
``DEALLOCATE ALL``, so the bookkeeping can never disagree with the server for long; a message that
finds a statement gone (a pooler in transaction mode handing us another server connection) runs
again at once, re-preparing. A statement the server cannot prepare (a parameter whose type only its
literal decides: SQLSTATE class 42) is remembered and sent unprepared from then on.

Statements are named by a digest of their text and parameter types. At most :data:`PER_CONNECTION`
stay prepared on a connection (the least recently used is deallocated in the next message), so
filters of many shapes cannot grow the server's memory.
"""

from __future__ import annotations

import hashlib
import math
import re
import weakref
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from psycopg import AsyncClientCursor, AsyncConnection

#: statements kept prepared per connection (PostgreSQL's own plan cache has no limit of its own)
PER_CONNECTION: Final = 128
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")
#: statement texts the server refused to prepare: sent as text from then on (bounded: see ``refuse``)
_REFUSED: set[str] = set()
_MAX_REFUSED: Final = 1024
#: what the process did, for ``/metrics`` (``hero_store_prepared_total``): statements ``prepared``,
#: ``deallocated`` (the least recently used, beyond :data:`PER_CONNECTION`), ``resets`` (DEALLOCATE
#: ALL after a failure left a connection's set unknown), ``refused`` (texts the server could not prepare)
STATS: Counter[str] = Counter({"prepared": 0, "deallocated": 0, "resets": 0, "refused": 0})


@dataclass(frozen=True, slots=True)
class Template:
    """One statement text as ``$n`` parameters: the text, and the order of its parameters (names for
    a mapping, a count for a sequence)."""

    text: str
    names: tuple[str, ...] | None
    count: int


@lru_cache(maxsize=1024)
def template(sql: str) -> Template:
    """``sql`` (psycopg placeholders: ``%s`` or ``%(name)s``, ``%%``) with ``$n`` parameters."""
    names: list[str] = []
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        token = match.group(0)
        if token == "%%":
            return "%"
        name = match.group(1)
        if name is None:
            count += 1
            return f"${count}"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    text = _PLACEHOLDER.sub(number, sql)
    if names and count:
        raise ValueError("a statement mixes named and positional placeholders")
    return Template(text, tuple(names) if names else None, count)


def literal_type(value: object) -> str | None:
    """The type PostgreSQL gives ``value`` written as psycopg's literal (``'text'`` and NULL: unknown,
    resolved by their context; a number: by its size), so that a prepared statement reads its
    parameters exactly as the text with the literals would; None: a value not prepared."""
    if value is None or isinstance(value, str):
        return "unknown"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return "integer"
        return "bigint" if -(2**63) <= value < 2**63 else "numeric"
    if isinstance(value, float):
        return "numeric" if math.isfinite(value) else "double precision"
    return None


def _values(tpl: Template, params: object) -> Sequence[object]:
    if tpl.names is not None:
        assert isinstance(params, Mapping)
        return [params[n] for n in tpl.names]
    assert isinstance(params, Sequence) and len(params) == tpl.count
    return params


@dataclass(slots=True)
class Prepared:
    """The statements one connection holds prepared (least recently used first)."""

    names: OrderedDict[str, None] = field(default_factory=OrderedDict)
    #: the server's set is unknown (a message failed): the next message starts with DEALLOCATE ALL
    unknown: bool = False


_BY_CONNECTION: weakref.WeakKeyDictionary[AsyncConnection[Any], Prepared] = weakref.WeakKeyDictionary()


def of(conn: AsyncConnection[Any]) -> Prepared:
    found = _BY_CONNECTION.get(conn)
    if found is None:
        found = _BY_CONNECTION[conn] = Prepared()
    return found


def refuse(sql: str) -> None:
    """The server could not prepare ``sql``: send it as text from now on."""
    if len(_REFUSED) >= _MAX_REFUSED:
        _REFUSED.clear()
    _REFUSED.add(sql)
    STATS["refused"] += 1


@dataclass(slots=True)
class Message:
    """The text of one batch message: the set-up (DEALLOCATEs, PREPAREs) and the statements."""

    setup: list[str]
    statements: list[str]
    #: the statements this message prepares, name -> text (recorded once they ran: :func:`ran`)
    added: dict[str, str]


def compose(
    cur: AsyncClientCursor[Any], held: Prepared, statements: Sequence[tuple[str, object]], *, prepare: bool
) -> Message:
    """The message for ``statements``: each one a prepared ``EXECUTE`` when ``prepare`` and the server
    accepted its text, else the text with its parameters quoted in (as without preparation)."""
    setup: list[str] = []
    if held.unknown:
        setup.append("DEALLOCATE ALL")
        STATS["resets"] += 1
        held.names.clear()
        held.unknown = False
    out: list[str] = []
    added: dict[str, str] = {}
    used: set[str] = set()
    for sql, params in statements:
        prepared = _prepared(sql, params) if prepare and sql not in _REFUSED else None
        if prepared is None:
            out.append(cur.mogrify(sql, params))  # type: ignore[arg-type]
            continue
        name, prepare_sql, values = prepared
        used.add(name)
        if name in held.names:
            held.names.move_to_end(name)
        elif name not in added:
            setup.append(prepare_sql)
            added[name] = sql
        args = "(" + ", ".join(["%s"] * len(values)) + ")" if values else ""
        out.append(cur.mogrify(f"EXECUTE {name}{args}", values))
    _evict(held, setup, len(held.names) + len(added) - PER_CONNECTION, keep=used)
    return Message(setup, out, added)


def _evict(held: Prepared, setup: list[str], count: int, *, keep: set[str]) -> None:
    """Deallocate the ``count`` least recently used statements (none that this message runs)."""
    for name in [n for n in held.names if n not in keep][: max(0, count)]:
        del held.names[name]
        setup.insert(0, f"DEALLOCATE {name}")
        STATS["deallocated"] += 1


def _prepared(sql: str, params: object) -> tuple[str, str, Sequence[object]] | None:
    """The name, ``PREPARE`` and parameter values of ``sql`` run with ``params``; None when a value
    has a type this module does not prepare. The name is a digest of the text and the parameters'
    types: one text run with an integer and with a numeric is two prepared statements."""
    if not _PREPARABLE.match(sql):
        return None
    tpl = template(sql)
    values = _values(tpl, params)
    types = [literal_type(v) for v in values]
    if None in types:
        return None
    signature = ", ".join(t for t in types if t is not None)
    digest = hashlib.blake2b(f"{signature}|{sql}".encode(), digest_size=10).hexdigest()
    name = f"hero_{digest}"
    typed = f" ({signature})" if signature else ""
    return name, f"PREPARE {name}{typed} AS {tpl.text}", values


#: what PREPARE takes (not BEGIN, COMMIT, SET LOCAL: those go as text)
_PREPARABLE: Final = re.compile(r"\s*(SELECT|WITH|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


def ran(held: Prepared, message: Message) -> None:
    """Every statement of ``message``'s set-up ran: its PREPAREs hold."""
    for name in message.added:
        held.names[name] = None
    STATS["prepared"] += len(message.added)


#: SQLSTATE classes of errors a statement AFTER the set-up raises (data, integrity, serialization,
#: ``hero_fail``'s RAISE): the set-up ran. Any other (syntax and types, a missing or duplicate
#: prepared statement, the connection) leaves the server's prepared set unknown.
_AFTER_SETUP: Final = frozenset({"22", "23", "40", "P0"})


def failed(held: Prepared, message: Message, sqlstate: str | None) -> str:
    """Book a failed ``message``; what to do: ``"raise"``, or run it again (nothing of it committed: the
    server skips the rest of a message after an error) ``"as text"`` (the server could not prepare
    one of its new statements: those are sent as text from now on) or ``"prepared"`` (a statement
    this connection held is gone: a pooler in transaction mode moved us to another server connection,
    or a DEALLOCATE we did not send; the retry re-prepares after DEALLOCATE ALL)."""
    if sqlstate is not None and sqlstate[:2] in _AFTER_SETUP:
        ran(held, message)
        return "raise"
    if message.setup or sqlstate == _NO_SUCH_STATEMENT:
        held.unknown = True
    if sqlstate == _NO_SUCH_STATEMENT:
        return "prepared"
    if sqlstate is not None and sqlstate.startswith("42") and message.added:
        for sql in message.added.values():
            refuse(sql)
        return "as text"
    return "raise"


#: SQLSTATE invalid_sql_statement_name: EXECUTE of a statement the server does not hold
_NO_SUCH_STATEMENT: Final = "26000"
