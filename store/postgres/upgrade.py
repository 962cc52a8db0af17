"""Create or upgrade the schema on open: the missing migrations of :data:`store.postgres.schema.MIGRATIONS`
in one transaction, under the row lock of ``hero_schema`` (several daemons may start at once: the
first one migrates, the others wait on the lock and then find nothing to do)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import AsyncConnection

from store.errors import StoreUnavailable
from store.postgres.schema import MIGRATIONS, SCHEMA_VERSION, VERSION_TABLE


async def migrate(conn: AsyncConnection[Any]) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; the version found before (0: an empty database)."""
    for attempt in range(3):
        try:
            # two daemons creating the version table at once: one of them fails, and tries again
            await conn.execute(VERSION_TABLE)
            await conn.execute("INSERT INTO hero_schema VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
            break
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject):
            if attempt == 2:
                raise
    async with conn.transaction():
        cur = await conn.execute("SELECT version FROM hero_schema WHERE id = 1 FOR UPDATE")
        row = await cur.fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the database was written by a newer hero-agent (schema {found}, this one knows "
                f"{SCHEMA_VERSION})"
            )
        for statements in MIGRATIONS[found:]:
            for sql in statements:
                await conn.execute(sql)
        await conn.execute("UPDATE hero_schema SET version = %s WHERE id = 1", (SCHEMA_VERSION,))
    return found
