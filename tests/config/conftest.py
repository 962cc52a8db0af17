from __future__ import annotations

from collections.abc import Iterator

import pytest

from config.logging import reset_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``main`` and ``configure_logging`` configure process-wide logging: undo it after each test."""
    yield
    reset_logging()
