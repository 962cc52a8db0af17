"""The documentation names only files that exist: every ``*.py`` path in docs/ and README.md.

A path with a folder (``store/osis/server.py``) must exist from the repository root; a bare file name
(``turn.py``) must be the name of some file in the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY_PATH = re.compile(r"(?<![\w./-])([\w-]+(?:/[\w.-]+)*\.py)\b")
SKIP = {".git", ".venv", "node_modules", "__pycache__"}


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _py_names() -> set[str]:
    return {path.name for path in ROOT.rglob("*.py") if not SKIP.intersection(path.relative_to(ROOT).parts)}


def _named_paths() -> list[tuple[str, str]]:
    return [
        (doc.name, match.group(1))
        for doc in _documents()
        for match in PY_PATH.finditer(doc.read_text(encoding="utf-8"))
    ]


def test_the_docs_name_python_files() -> None:
    # the check below is only worth something while the docs do name files
    assert len(_named_paths()) > 50


def test_every_python_path_in_the_docs_exists() -> None:
    names = _py_names()
    missing = [
        f"{doc}: {path}"
        for doc, path in _named_paths()
        if not ((ROOT / path).is_file() if "/" in path else path in names)
    ]
    assert missing == []
