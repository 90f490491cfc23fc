"""Where the database is: the configured URL, or the embedded cluster under ``home/pg``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from acme_ca.config import Config
from acme_ca.db.migrate import apply_schema
from acme_ca.embedded_pg import EmbeddedPostgres


@asynccontextmanager
async def database_dsn(config: Config) -> AsyncIterator[str]:
    """Yield a DSN; an embedded server started here is stopped on exit, one found running is not."""
    if config.database_url:
        yield config.database_url
        return
    embedded = EmbeddedPostgres(config.home / "pg", throwaway=config.ephemeral)
    dsn = await asyncio.to_thread(embedded.start)
    try:
        yield dsn
    finally:
        await asyncio.to_thread(embedded.stop)


async def migrate(dsn: str) -> list[int]:
    """Apply the schema over one short-lived connection."""
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_schema(conn)
    finally:
        await conn.close()
