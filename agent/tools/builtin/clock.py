"""Built-in tool ``current_datetime``: the model has no clock of its own."""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from typing import Any

from agent.tools.base import Tool, ToolCaller, ToolError, ToolResult


class CurrentDateTimeTool(Tool):
    """The current date and time, in UTC or a named IANA time zone."""

    name = "current_datetime"
    description = "The current date, time and weekday, in UTC or in an IANA time zone (e.g. Europe/Brussels)."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "description": "IANA time zone name; default UTC.",
                "maxLength": 64,
            }
        },
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolCaller) -> ToolResult:
        name = str(args.get("timezone") or "UTC").strip()
        try:
            zone = zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ToolError(
                f"unknown time zone {name!r}: use an IANA name such as 'Europe/Brussels' or 'UTC'"
            ) from None
        now = datetime.now(zone)
        return ToolResult(
            f"{now:%A %Y-%m-%d %H:%M:%S} {now.tzname()} ({name}, UTC{now:%z})\n"
            f"ISO 8601: {now.isoformat(timespec='seconds')}\nUnix time: {int(now.timestamp())}"
        )
