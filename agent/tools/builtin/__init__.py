"""The built-in tools (docs/tools.md): :mod:`.memory` (``memory_save``, ``memory_search``,
``memory_forget``), :mod:`.clock` (``current_datetime``), :mod:`.search` (``search_conversations``)."""
