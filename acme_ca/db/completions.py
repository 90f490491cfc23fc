"""Waiting, without polling, for a signing worker to finish an order.

The worker that stores a certificate (or gives up on an order) sends ``NOTIFY`` on
:data:`ORDER_DONE_CHANNEL` with the order id, inside the same transaction, so the
notification arrives only once the order's final state is committed.  A front-end process
keeps one pooled connection LISTENing; finalize registers a waiter *before* it queues the
job, so a worker faster than the response cannot be missed.

When the listening connection is lost (database restart), waits return at once and the
client polls as usual; the next finalize tries to listen again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger(component="acme_ca.db.completions")

ORDER_DONE_CHANNEL = "acme_ca_order_done"
#: Seconds between attempts to listen again after the connection was lost.
RELISTEN_INTERVAL = 5.0


async def notify_order_done(conn: asyncpg.Connection, order_id: int) -> None:
    """Inside the transaction that moves ``order_id`` out of ``processing``."""
    await conn.execute("SELECT pg_notify($1, $2)", ORDER_DONE_CHANNEL, str(order_id))


class OrderCompletions:
    """One LISTEN connection per process, fanned out to the requests waiting on orders."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.Connection | None = None
        self._waiters: dict[int, set[asyncio.Event]] = {}
        self._next_attempt = 0.0

    @property
    def listening(self) -> bool:
        if self._conn is None:
            return False
        try:
            return not self._conn.is_closed()
        except asyncpg.InterfaceError:  # lost: the pool took the connection back already
            return False

    async def start(self) -> None:
        """Listen now (raises when the database is unreachable)."""
        self._next_attempt = time.monotonic() + RELISTEN_INTERVAL
        conn = await self._pool.acquire()
        try:
            await conn.add_listener(ORDER_DONE_CHANNEL, self._notified)
        except BaseException:
            await self._pool.release(conn)
            raise
        self._conn = conn

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(asyncpg.InterfaceError, OSError):
            await conn.remove_listener(ORDER_DONE_CHANNEL, self._notified)
        # A lost connection was given back by the pool already (its proxy is detached).
        with contextlib.suppress(asyncpg.InterfaceError):
            await self._pool.release(conn)

    def _notified(self, _conn: Any, _pid: Any, _channel: Any, payload: Any) -> None:
        try:
            order_id = int(payload)
        except (TypeError, ValueError):
            return
        for event in self._waiters.get(order_id, ()):
            event.set()

    async def listen(self) -> bool:
        """Whether the connection listens, listening (again) first if need be; failures
        are logged, and tried again at most every :data:`RELISTEN_INTERVAL` seconds."""
        if self.listening:
            return True
        if time.monotonic() < self._next_attempt:
            return False
        if self._conn is not None:  # broken: hand it back before listening again
            await self.aclose()
        try:
            await self.start()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("completions.listen_failed", error=repr(exc))
            return False
        log.info("completions.listening")
        return True

    @contextlib.asynccontextmanager
    async def watch(self, order_id: int) -> AsyncIterator[asyncio.Event | None]:
        """An event set when ``order_id`` is done; None when nothing is listening (then
        there is nothing to wait for).  Enter it before queueing the job."""
        if not await self.listen():
            yield None
            return
        event = asyncio.Event()
        self._waiters.setdefault(order_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiters.get(order_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[order_id]
