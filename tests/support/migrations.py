"""Databases as an older release left them, for migration tests.

Only one snapshot is kept (``tests/data/schema_before_001.sql``: schema.sql before the first
numbered migration); the schema before any later migration N is that snapshot brought forward
by the real migrations below N, which is also the path an old production database takes.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

from acme_ca.db.migrate import migrations

FIRST_SNAPSHOT = Path(__file__).parent.parent / "data" / "schema_before_001.sql"


async def create_schema_before(conn: asyncpg.Connection, version: int) -> None:
    """Give ``conn``'s empty database the schema as it stood before migration ``version``."""
    await conn.execute(FIRST_SNAPSHOT.read_text())
    for m in migrations():
        if m.version >= version:
            break
        await conn.execute(m.sql)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name
        )
