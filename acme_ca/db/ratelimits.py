"""Rate-limit buckets and overrides (``rate_limit_buckets``, ``rate_limit_overrides``).

Each bucket is a GCRA state: its theoretical arrival time (``tat``).  A limit of ``count``
per ``period`` spends one emission interval ``T = period / count`` per request, and a request
is allowed when ``max(tat, now) + T <= now + period`` (at most ``count`` in any window, all
of them at once if the bucket is full).  :meth:`RateLimitRepository.spend` decides and moves
every bucket of a request in one ``INSERT ... ON CONFLICT DO UPDATE``: the row lock of the
upsert serialises concurrent requests on a bucket, the override (if any) is joined in the
same statement, so a check is one round trip, and the front end's repository commits it
without waiting for the WAL flush (:meth:`RateLimitRepository.open`).  A bucket whose
``tat`` has passed is full again and can be deleted (:meth:`RateLimitRepository.purge`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from acme_ca.db.audit import record_event
from acme_ca.db.pool import create_pool


@dataclass(frozen=True)
class Spend:
    """One bucket a request draws from, with the limit's configured size."""

    limit: str
    key: str
    count: int
    period_seconds: int


@dataclass(frozen=True)
class Decision:
    """A bucket after the request: allowed or not, under the effective (possibly
    overridden) ``count`` per ``period_seconds``, and its theoretical arrival time."""

    limit: str
    key: str
    count: int
    period_seconds: int
    tat: datetime
    allowed: bool


@dataclass(frozen=True)
class Override:
    limit: str
    key: str
    count: int
    period_seconds: int
    comment: str
    actor: str
    created_at: datetime


# The effective count/period of each requested bucket (its override, else the default):
# $1..$4 are the requested names, keys, counts and periods.
_EFFECTIVE = """
    WITH req AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[])
            AS r(limit_name, bucket_key, count, period_seconds)
    ), eff AS (
        SELECT r.limit_name, r.bucket_key,
               coalesce(o.count, r.count) AS count,
               coalesce(o.period_seconds, r.period_seconds) AS period_seconds
        FROM req r LEFT JOIN rate_limit_overrides o USING (limit_name, bucket_key)
    )"""

# Then: T = period / count (NULL for a count of 0: never allowed); $5 is now.
_SPEND = (
    _EFFECTIVE  # noqa: S608 - constant SQL
    + """
    INSERT INTO rate_limit_buckets AS b (limit_name, bucket_key, count, period_seconds, tat,
                                         allowed)
    SELECT limit_name, bucket_key, count, period_seconds,
           CASE WHEN count > 0
                THEN $5::timestamptz + make_interval(secs => period_seconds::float8
                                                          / nullif(count, 0))
                ELSE $5::timestamptz END,
           count > 0
    FROM eff
    ON CONFLICT (limit_name, bucket_key) DO UPDATE SET
        count = EXCLUDED.count,
        period_seconds = EXCLUDED.period_seconds,
        allowed = coalesce(
            greatest(b.tat, $5::timestamptz)
                + make_interval(secs => EXCLUDED.period_seconds::float8
                                        / nullif(EXCLUDED.count, 0))
            <= $5::timestamptz + make_interval(secs => EXCLUDED.period_seconds), false),
        tat = CASE
            WHEN greatest(b.tat, $5::timestamptz)
                     + make_interval(secs => EXCLUDED.period_seconds::float8
                                             / nullif(EXCLUDED.count, 0))
                 <= $5::timestamptz + make_interval(secs => EXCLUDED.period_seconds)
            THEN greatest(b.tat, $5::timestamptz)
                     + make_interval(secs => EXCLUDED.period_seconds::float8
                                             / nullif(EXCLUDED.count, 0))
            ELSE b.tat END
    RETURNING limit_name, bucket_key, count, period_seconds, tat, allowed"""
)

_CHECK = (
    _EFFECTIVE  # noqa: S608 - constant SQL
    + """
    SELECT e.limit_name, e.bucket_key, e.count, e.period_seconds,
           coalesce(b.tat, $5::timestamptz) AS tat,
           coalesce(
               greatest(coalesce(b.tat, $5::timestamptz), $5::timestamptz)
                   + make_interval(secs => e.period_seconds::float8 / nullif(e.count, 0))
               <= $5::timestamptz + make_interval(secs => e.period_seconds), false) AS allowed
    FROM eff e LEFT JOIN rate_limit_buckets b USING (limit_name, bucket_key)"""
)


def _decision(row: asyncpg.Record) -> Decision:
    return Decision(
        limit=row["limit_name"],
        key=row["bucket_key"],
        count=row["count"],
        period_seconds=row["period_seconds"],
        tat=row["tat"],
        allowed=row["allowed"],
    )


def _arrays(spends: Sequence[Spend]) -> tuple[list[str], list[str], list[int], list[int]]:
    unique = list(dict.fromkeys(spends))  # one row per bucket: an upsert touches it once
    return (
        [s.limit for s in unique],
        [s.key for s in unique],
        [s.count for s in unique],
        [s.period_seconds for s in unique],
    )


class RateLimitRepository:
    def __init__(self, pool: asyncpg.Pool, *, owns_pool: bool = False) -> None:
        self._pool = pool
        self._owns_pool = owns_pool

    @classmethod
    async def open(
        cls, dsn: str, *, max_size: int = 4, acquire_timeout: float | None = None
    ) -> RateLimitRepository:
        """A repository on a pool of its own whose sessions commit asynchronously
        (``synchronous_commit = off``): a charge does not wait for the WAL flush, which
        costs more than the statement itself.  A crash of PostgreSQL may forget the last
        fraction of a second of charges: the limits then count a few requests short, which
        is all it costs; overrides and audit rows are written through other pools."""
        pool = await create_pool(
            dsn,
            max_size=max_size,
            acquire_timeout=acquire_timeout,
            server_settings={"synchronous_commit": "off"},
        )
        return cls(pool, owns_pool=True)

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def close(self) -> None:
        if self._owns_pool:
            await self._pool.close()

    async def spend(self, spends: Sequence[Spend], now: datetime) -> list[Decision]:
        """Draw one request from each bucket that allows it; one statement for them all."""
        if not spends:
            return []
        rows = await self._pool.fetch(_SPEND, *_arrays(spends), now)
        return [_decision(r) for r in rows]

    async def check(self, spends: Sequence[Spend], now: datetime) -> list[Decision]:
        """Whether each bucket would allow a request now, drawing nothing."""
        if not spends:
            return []
        rows = await self._pool.fetch(_CHECK, *_arrays(spends), now)
        return [_decision(r) for r in rows]

    async def refund(self, decisions: Sequence[Decision]) -> None:
        """Give back what allowed buckets were charged for a request refused by another."""
        given = [d for d in decisions if d.allowed and d.count > 0]
        if not given:
            return
        await self._pool.execute(
            """UPDATE rate_limit_buckets b
               SET tat = b.tat - make_interval(secs => b.period_seconds::float8 / b.count)
               FROM unnest($1::text[], $2::text[]) AS r(limit_name, bucket_key)
               WHERE b.limit_name = r.limit_name AND b.bucket_key = r.bucket_key
                 AND b.count > 0""",
            [d.limit for d in given],
            [d.key for d in given],
        )

    async def purge(self, now: datetime) -> int:
        """Delete full buckets (``tat`` passed): they allow exactly what a missing one does."""
        status = await self._pool.execute("DELETE FROM rate_limit_buckets WHERE tat <= $1", now)
        return int(status.split()[-1])

    # ------------------------------------------------------------------ overrides

    async def set_override(self, override: Override) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO rate_limit_overrides (limit_name, bucket_key, count,
                                                     period_seconds, comment, actor, created_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (limit_name, bucket_key) DO UPDATE SET
                       count = EXCLUDED.count, period_seconds = EXCLUDED.period_seconds,
                       comment = EXCLUDED.comment, actor = EXCLUDED.actor,
                       created_at = EXCLUDED.created_at""",
                override.limit,
                override.key,
                override.count,
                override.period_seconds,
                override.comment,
                override.actor,
                override.created_at,
            )
            await record_event(
                conn,
                "ratelimit.override_set",
                at=override.created_at,
                actor=override.actor,
                details={
                    "limit": override.limit,
                    "key": override.key,
                    "count": override.count,
                    "period_seconds": override.period_seconds,
                    "comment": override.comment,
                },
            )

    async def clear_override(self, limit: str, key: str, *, actor: str, now: datetime) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            gone = await conn.fetchval(
                """DELETE FROM rate_limit_overrides WHERE limit_name = $1 AND bucket_key = $2
                   RETURNING 1""",
                limit,
                key,
            )
            if gone is None:
                return False
            await record_event(
                conn,
                "ratelimit.override_cleared",
                at=now,
                actor=actor,
                details={"limit": limit, "key": key},
            )
        return True

    async def overrides(self) -> list[Override]:
        rows = await self._pool.fetch(
            "SELECT * FROM rate_limit_overrides ORDER BY limit_name, bucket_key"
        )
        return [
            Override(
                limit=r["limit_name"],
                key=r["bucket_key"],
                count=r["count"],
                period_seconds=r["period_seconds"],
                comment=r["comment"],
                actor=r["actor"],
                created_at=r["created_at"],
            )
            for r in rows
        ]
