"""The ``postgres`` store engine: PostgreSQL through psycopg 3 (see docs/store.md)."""
