"""The domain API: the :class:`~store.api.store.Store` the agent talks to, one module per concept."""
