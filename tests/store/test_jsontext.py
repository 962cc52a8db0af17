"""store/jsontext.py writes and reads what ``json`` would, value for value, error for error: orjson's
speed where the two agree, ``json``'s answer where they do not."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store import jsontext
from store.errors import InvalidInput

#: JSON values as Python holds them, with what orjson and json treat differently: integers past 64
#: bits, non-finite floats, lone surrogates, non-ASCII text
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.integers(min_value=-(2**64), max_value=-(2**63) + 2)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.text(alphabet=st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010))
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _json_dumps(value: object, allow_nan: bool) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=allow_nan)


def _same(a: object, b: object) -> bool:
    """Equal, with NaN equal to NaN and int and float told apart (1 is not 1.0 here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def _outcome(fn: object, *args: object, **kw: object) -> tuple[str, object]:
    try:
        return "ok", fn(*args, **kw)  # type: ignore[operator]
    except (TypeError, ValueError) as exc:
        return "error", type(exc).__mro__[1:]  # the kind of error, not its words


@settings(max_examples=400, deadline=None)
@given(_VALUES, st.booleans())
def test_dumps_reads_back_as_json_would_and_fails_where_json_fails(value: object, allow_nan: bool) -> None:
    ours = _outcome(jsontext.dumps, value, allow_nan=allow_nan)
    theirs = _outcome(_json_dumps, value, allow_nan)
    assert ours[0] == theirs[0], (value, ours, theirs)
    if ours[0] == "ok":
        assert isinstance(ours[1], str)
        # the text may spell a float differently (1e16 for 1e+16): the values are the same
        assert _same(json.loads(ours[1]), json.loads(theirs[1]))  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_loads_gives_json_values_for_any_text_json_wrote(value: object) -> None:
    try:
        text = _json_dumps(value, True)
    except ValueError:
        return
    for data in (text, text.encode("utf-8", "surrogatepass")):
        ours = _outcome(jsontext.loads, data)
        theirs = _outcome(json.loads, data)
        assert ours[0] == theirs[0], (data, ours, theirs)
        if ours[0] == "ok":
            assert _same(ours[1], theirs[1]), (data, ours[1], theirs[1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"n":123456789012345678901234567890}', {"n": 123456789012345678901234567890}),
        ('{"n":-18446744073709551617}', {"n": -18446744073709551617}),
        ('{"x":NaN,"y":Infinity}', None),  # json reads them: NaN is checked below
        ('"\\ud800"', "\ud800"),
        ('{"a":1,"a":2}', {"a": 2}),
    ],
)
def test_loads_where_orjson_alone_would_differ(text: str, expected: object) -> None:
    got = jsontext.loads(text)
    if expected is None:
        assert math.isnan(got["x"]) and got["y"] == math.inf
    else:
        assert got == expected and type(got) is type(expected)


def test_loads_fails_on_broken_text_as_json_does() -> None:
    for bad in ('{"a":', "", "[1,]", b"\xff\xfe"):
        with pytest.raises(ValueError):
            jsontext.loads(bad)


class _Colour(enum.StrEnum):
    RED = "red"


@dataclasses.dataclass
class _Point:
    x: int


def test_record_text_refuses_what_is_not_json() -> None:
    for bad in (
        {"x": math.nan},
        {"x": [1, {"y": -math.inf}]},
        {"when": datetime.datetime(2026, 1, 1)},
        {"p": _Point(1)},
        {"s": {1, 2}},
    ):
        with pytest.raises(InvalidInput, match="JSON values only"):
            jsontext.record_text(bad)
    # what json writes, this writes too: an integer past 64 bits, a str subclass, non-ASCII, a
    # key that is not a string
    rec = {"big": 2**70, "colour": _Colour.RED, "text": "héllo ✓", 1: None}
    assert jsontext.record_text(rec) == _json_dumps(rec, False)
    expected = {"big": 2**70, "colour": "red", "text": "héllo ✓", "1": None}
    assert jsontext.loads(jsontext.record_text(rec)) == expected
