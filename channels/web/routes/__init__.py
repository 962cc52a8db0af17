"""The web channel's own routes, one module per area: chat, conversations, media, ops, pairing
(the OpenAI-compatible ``/v1`` routes are in ``channels/web/openai/``)."""
