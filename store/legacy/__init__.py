"""The one-time import of a legacy SQLite agent database (``hero-agent migrate-sqlite``)."""
