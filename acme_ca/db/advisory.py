"""PostgreSQL advisory locks that elect one process for a job every process could do.

Several signing workers each run a status updater; only one of them should publish a given
issuer's CRLs (two would hand out interleaved CRL numbers and write the same files).  Each
updater asks :meth:`AdvisoryLocks.holds` before publishing: the first to take the lock
keeps it for as long as its connection lives, the others stand by.  When the holder dies its
connection closes and PostgreSQL releases the lock, so a standby takes over at its next
publication.

The locks live on one connection taken out of the pool for good: the pool's release hook
skips asyncpg's ``pg_advisory_unlock_all()`` (:mod:`acme_ca.db.pool`), so a pooled connection
must never carry one back.
"""

from __future__ import annotations

import contextlib
import hashlib

import asyncpg

#: The first key of every lock taken here ("ACME" as a signed 32-bit integer).
NAMESPACE = int.from_bytes(b"ACME", "big", signed=True)


def lock_key(name: str) -> int:
    """The second key of ``name``'s lock: 32 bits of its SHA-256, signed."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


class AdvisoryLocks:
    """Session-level advisory locks held on one dedicated connection (module docstring)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.Connection | None = None
        self._held: set[str] = set()

    async def holds(self, name: str) -> bool:
        """Whether this process holds lock ``name``, taking it if it is free.  A lost
        connection loses its locks: they are taken again, if still free, on a new one."""
        conn = await self._connection()
        key = lock_key(name)
        if name in self._held:
            still: bool = await conn.fetchval(
                """SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
                   AND pid = pg_backend_pid() AND classid::bigint = ($1::bigint & 4294967295)
                   AND objid::bigint = ($2::bigint & 4294967295) AND objsubid = 2 AND granted)""",
                NAMESPACE,
                key,
            )
            if still:
                return True
            self._held.discard(name)
        taken: bool = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", NAMESPACE, key)
        if taken:
            self._held.add(name)
        return taken

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is not None and self._conn.is_closed():
            await self._drop()
        if self._conn is None:
            self._conn = await self._pool.acquire()
        return self._conn

    async def _drop(self) -> None:
        """Give a broken connection back (its locks died with its session)."""
        conn, self._conn = self._conn, None
        self._held.clear()
        if conn is not None:
            with contextlib.suppress(asyncpg.InterfaceError, asyncpg.PostgresError, OSError):
                await self._pool.release(conn)

    async def aclose(self) -> None:
        """Release every lock and return the connection to the pool."""
        conn, self._conn = self._conn, None
        self._held.clear()
        if conn is None:
            return
        with contextlib.suppress(asyncpg.InterfaceError, asyncpg.PostgresError, OSError):
            if not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock_all()")
        with contextlib.suppress(asyncpg.InterfaceError, asyncpg.PostgresError, OSError):
            await self._pool.release(conn)
