"""docs/osis.md documents what the code does: every method, error code and legacy column alias."""

from __future__ import annotations

import re
from pathlib import Path

from store.legacy.columns import ALIASES
from store.models import Kind
from store.osis import protocol as proto

DOC = (Path(__file__).resolve().parents[2] / "docs" / "osis.md").read_text(encoding="utf-8")


def test_every_method_is_documented() -> None:
    for name in proto.METHODS:
        obj, _, verb = name.partition(".")
        if obj in proto.KIND_BY_OBJECT:
            assert f"### `<object>.{verb}`" in DOC, name
        else:
            assert f"### `{name}`" in DOC, name
    for kind in Kind:
        assert f"`{kind.rpc_name}`" in DOC


def test_every_error_code_is_documented() -> None:
    codes = [v for k, v in vars(proto).items() if k.isupper() and isinstance(v, int) and -32800 < v < -31999]
    assert len(codes) >= 11
    for code in codes:
        assert f"| {code} |" in DOC, code


def test_every_legacy_column_alias_is_documented() -> None:
    for table, fields in ALIASES.items():
        section = DOC.split(f"#### `{table}`", 1)[1].split("####", 1)[0]
        for field, names in fields.items():
            label = "created_at / timestamp" if field == "created" else field
            row = re.search(rf"^\| {re.escape(label)} \|(.*)$", section, re.M)
            assert row is not None, (table, field)
            assert re.findall(r"`([^`]+)`", row.group(1))[: len(names)] == list(names), (table, field)
