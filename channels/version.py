"""The installed distribution's version, for ``--version``, the start-up banner and ``doctor``."""

from __future__ import annotations

import importlib.metadata


def version() -> str:
    """``0+unknown`` when running from a tree that was never installed."""
    try:
        return importlib.metadata.version("hero-agent")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
