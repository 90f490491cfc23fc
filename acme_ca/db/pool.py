"""The asyncpg pool: JSON codecs registered once per connection through ``init=``."""

from __future__ import annotations

import json

import asyncpg


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def create_pool(dsn: str, *, max_size: int = 10) -> asyncpg.Pool:
    """Open a pool; raises ``OSError``/``asyncpg.PostgresError`` when the server is unreachable."""
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=max_size, init=_init_connection, command_timeout=30
    )
    assert pool is not None
    return pool
