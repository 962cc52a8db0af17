"""The OpenAI-compatible endpoint, ``/v1/chat/completions`` and ``/v1/models`` (docs/web.md):
:mod:`.routes` (the routes), :mod:`.history` (which conversation a request continues), :mod:`.retry`
(a repeated request), :mod:`.params` (the client's generation parameters and system text),
:mod:`.tools` (the client's own tools and their results)."""
