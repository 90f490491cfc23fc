"""The few cheap reads behind the operational gauges (:mod:`acme_ca.metrics`): the issuance
queue and the newest CRL per issuer.  Each is one indexed query, run at most every few
seconds whatever the scrape rate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class QueueState:
    """Unfinished issuance jobs and when the oldest of them was queued (None: none)."""

    queued: int
    running: int
    oldest_created_at: datetime | None


@dataclass(frozen=True)
class CrlTimes:
    """thisUpdate and nextUpdate of an issuer's newest CRL."""

    issuer: str
    this_update: datetime
    next_update: datetime


class GaugeReads:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def issuance_queue(self) -> QueueState:
        """Through the partial index ``issuance_jobs_runnable`` (queued and running only)."""
        row = await self._pool.fetchrow(
            """SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
                      count(*) FILTER (WHERE status = 'running') AS running,
                      min(created_at) AS oldest
               FROM issuance_jobs WHERE status IN ('queued', 'running')"""
        )
        assert row is not None
        return QueueState(row["queued"], row["running"], row["oldest"])

    async def newest_crls(self) -> list[CrlTimes]:
        """One row per issuer, read backwards along the (issuer, number) primary key."""
        rows = await self._pool.fetch(
            """SELECT DISTINCT ON (issuer) issuer, this_update, next_update
               FROM crls ORDER BY issuer, number DESC"""
        )
        return [CrlTimes(r["issuer"], r["this_update"], r["next_update"]) for r in rows]
