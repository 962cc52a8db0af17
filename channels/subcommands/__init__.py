"""Sub-commands of ``hero-agent``; each module has ``register(subparsers)``."""
