"""The embedded engine: SQLite in WAL mode in the data dir (schema, queries, batches, leases)."""
