"""Schema application: ``schema.sql`` for a fresh database, numbered migrations for old ones.

Runs under a PostgreSQL advisory lock so several processes starting at once (serve, worker,
a second serve behind the same load balancer) apply it exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

_LOCK_ID = 0x61636D65  # "acme"
_MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def schema_sql() -> str:
    return (resources.files("acme_ca.db") / "schema.sql").read_text()


def migrations() -> list[Migration]:
    """Numbered files in ``acme_ca/db/migrations``, in order."""
    found: list[Migration] = []
    directory = resources.files("acme_ca.db") / "migrations"
    if not directory.is_dir():
        return found
    for entry in directory.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def apply_schema(conn: asyncpg.Connection) -> list[int]:
    """Bring the database to the current schema; returns the migration versions applied."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        fresh = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NULL")
        if fresh:
            await conn.execute(schema_sql())
            for m in migrations():
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    m.version,
                    m.name,
                )
            return applied
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for m in migrations():
            if m.version in done:
                continue
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name
            )
            applied.append(m.version)
        # Idempotent statements (new tables/indexes) are safe to replay every start.
        await conn.execute(schema_sql())
    return applied
