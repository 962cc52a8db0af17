"""How the one-shot commands (``ask``, ``init``, ``doctor``) log: quietly, for people and scripts.

Their output is the answer or the report; logs are readable lines at warning and above (or at the
configured ``logging.level`` when that is stricter), and the events these commands show themselves
(the one error line, the progress line) are not repeated as log lines. ``--log-level`` turns the
filter off and shows every event at the level asked for.
"""

from __future__ import annotations

from config import LoggingSettings
from config.logging import LEVEL_NAMES

#: the quietest default: warnings and errors only
DEFAULT_LEVEL = "warning"
#: what the commands report themselves (the error line, the progress line): not repeated as log lines
SHOWN_EVENTS = ("llm.failed", "provider.retry", "provider.fallback")


def quiet_logging(settings: LoggingSettings, explicit_level: str | None) -> tuple[LoggingSettings, bool]:
    """A one-shot command's logging, and whether to hide :data:`SHOWN_EVENTS`: readable, at warning or
    stricter unless ``--log-level`` asked for a level."""
    fmt = "json" if settings.format == "json" else "console"
    if explicit_level:
        return LoggingSettings(level=explicit_level, format=fmt), False
    stricter = max(settings.level, DEFAULT_LEVEL, key=LEVEL_NAMES.index)
    return LoggingSettings(level=stricter, format=fmt), True
