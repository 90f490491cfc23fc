"""ACME requests stored one compact row each (``requests``), written in batches.

The front end hands each finished request to :meth:`RequestRecorder.record`, a list append
on the event loop; one task writes what has gathered with a single ``COPY`` every
``interval`` seconds (or sooner once ``batch`` rows wait), so a response never waits for
this INSERT and the database sees one round trip per batch, not per request.
:meth:`RequestRecorder.aclose` writes the rest at shutdown, after the listener stopped
taking requests and before the pool closes. A failed write keeps the rows for the next
attempt; only past ``max_pending`` (the database unreachable for long) are the oldest
dropped, counted in a ``requests.dropped`` error event.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import NamedTuple

import asyncpg
import structlog

log = structlog.get_logger(component="acme_ca.db.requests")


class RequestRow(NamedTuple):
    """One request as stored; the ids are those the URL named or the handler bound.

    A NamedTuple: built on every request (a frozen dataclass of 14 fields costs ten times
    as much) and handed to COPY as it is."""

    at: datetime
    method: str
    path: str
    status: int
    problem: str | None
    duration_ms: float
    user_agent: str
    source: str | None
    request_id: str
    account_id: int | None = None
    order_id: int | None = None
    authz_id: int | None = None
    challenge_id: int | None = None
    certificate_id: int | None = None


COLUMNS = RequestRow._fields
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM requests"  # noqa: S608 - constant names


class RequestRecorder:
    """Collects :class:`RequestRow`s and writes them off the response path."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        interval: float = 0.25,
        batch: int = 500,
        max_pending: int = 100_000,
    ) -> None:
        self._pool = pool
        self._interval = interval
        self._batch = batch
        self._max_pending = max_pending
        self._pending: list[RequestRow] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def record(self, row: RequestRow) -> None:
        """Queue ``row``; never blocks and never raises."""
        self._pending.append(row)
        if len(self._pending) >= self._batch:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="requests.recorder")

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # the writer must outlive any one bad batch
                log.exception("requests.write_failed")

    async def flush(self) -> int:
        """Write every queued row now; returns how many were written (0 on failure)."""
        if not self._pending:
            return 0
        rows, self._pending = self._pending, []
        try:
            await self._pool.copy_records_to_table("requests", records=rows, columns=COLUMNS)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self._pending[:0] = rows
            excess = len(self._pending) - self._max_pending
            if excess > 0:
                del self._pending[:excess]
                log.error("requests.dropped", count=excess, error=repr(exc))  # noqa: TRY400
            else:
                log.warning("requests.write_failed", queued=len(self._pending), error=repr(exc))
            return 0
        return len(rows)

    async def aclose(self) -> None:
        """Stop the writer and write what is left (normal shutdown loses no row)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()


async def requests_where(
    pool: asyncpg.Pool,
    *,
    request_id: str | None = None,
    order_id: int | None = None,
    authz_ids: tuple[int, ...] = (),
    challenge_ids: tuple[int, ...] = (),
    certificate_id: int | None = None,
    account_id: int | None = None,
) -> list[RequestRow]:
    """Requests matching any of the given ids, oldest first, as they were recorded."""
    records = await pool.fetch(
        _SELECT + " WHERE request_id = $1 "
        "OR order_id = $2 OR authz_id = ANY($3::bigint[]) OR challenge_id = ANY($4::bigint[]) "
        "OR certificate_id = $5 OR account_id = $6 ORDER BY at, id",
        request_id,
        order_id,
        list(authz_ids),
        list(challenge_ids),
        certificate_id,
        account_id,
    )
    return [RequestRow(*r) for r in records]
