"""The agent core: providers, the turn loop, tools, auto-memory, context window and shared commands.

It knows the store's interface and config's value objects, and no channel.
"""
