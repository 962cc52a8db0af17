"""The JSON text of stored records: what ``json`` writes and reads, at orjson's speed.

Every record is written as JSON text (the ``data`` column) and read back from it; a turn does about
six of each on the store's thread, on its path. orjson does them ~5-10x faster than ``json`` with its
settings, but the two differ in a few cases, and there the answer is ``json``'s, so that the text
stored and the values read back stay what they were:

* writing: orjson refuses what ``json`` accepts (integers past 64 bits, keys that are not strings,
  lone surrogates) and accepts what ``json`` refuses (dataclasses, datetimes: passed through to
  ``json``, which refuses them). It writes NaN and infinities as ``null`` where ``json`` raises
  (``allow_nan=False``) or writes ``NaN``: text with a ``null`` in it is checked for them.
  Floats may be spelled differently (``1e16`` for ``1e+16``): the same value read back.
  orjson's bytes are decoded at once and never kept: each holds a 4 KiB allocation whatever its
  length (kept one per message in the window cache, they cost the soak 27 MB of RSS).
* reading: orjson reads an integer past 64 bits as a float, and refuses ``NaN``, ``Infinity`` and
  lone surrogates: text whose value holds a float, or that orjson refuses, is read by ``json``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from store.errors import InvalidInput

#: what orjson passes to ``json`` instead of writing it in its own way
_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def dumps(value: Any, *, allow_nan: bool = False) -> str:
    """Compact JSON text, non-ASCII kept as is: ``json.dumps(value, ensure_ascii=False,
    separators=(",", ":"), allow_nan=allow_nan)``, with its errors (ValueError, TypeError)."""
    data = _orjson(value)
    return _json_dumps(value, allow_nan) if data is None else data.decode()


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``: the same values, the same errors (ValueError)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    # orjson reads an integer past 64 bits as a float: a value with a float in it is json's to read
    # (a record seldom holds one; a check of the text itself would cost more than the parse)
    return json.loads(text) if _has_float(value) else value


def record_text(rec: Any) -> str:
    """A record as stored: JSON values only, or InvalidInput (NaN and infinities are not JSON)."""
    try:
        return dumps(rec)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"a record must hold JSON values only ({exc})") from None


def _orjson(value: Any) -> bytes | None:
    """orjson's bytes where they are ``json``'s text, None where ``json`` must answer."""
    try:
        data = orjson.dumps(value, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: json's answer (its text or its error)
        return None
    if b"null" in data and _non_finite(value):
        return None
    return data


def _json_dumps(value: Any, allow_nan: bool) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=allow_nan)


def _non_finite(value: Any) -> bool:
    """A float NaN or infinity anywhere in ``value`` (lists, tuples and dicts walked)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    return False


def _has_float(value: Any) -> bool:
    """A float anywhere in a value orjson read (dicts and lists walked)."""
    kind = type(value)
    if kind is dict:
        items = value.values()
    elif kind is list:
        items = value
    else:
        return kind is float
    for item in items:
        kind = type(item)
        if kind is float or ((kind is dict or kind is list) and _has_float(item)):
            return True
    return False
