"""The command line's own options (the sub-commands have their own test modules)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "hero-agent"


def test_version_prints_the_installed_version() -> None:
    done = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"hero-agent {importlib.metadata.version('hero-agent')}\n"
