"""The key-compromise sweep queue (BR 4.9.1.1 #3, 4.9.12): ``key_compromise_sweeps`` rows,
queued by :mod:`acme_ca.db.certificates` in the transaction that blocks a compromised key, and
taken by the signing workers' sweepers (:mod:`acme_ca.status.key_compromise`).

A sweep is claimed under a lease (``locked_by`` / ``locked_until``, ``FOR UPDATE SKIP
LOCKED``), so two workers never run the same one; a worker that dies leaves a lease that
lapses and another worker takes the sweep over.  Every revocation is its own short
transaction that first checks the lease is still ours, so a sweep taken over is never run
twice at once, and one that fails halfway keeps what it did and goes on from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from acme_ca.db.audit import record_event
from acme_ca.db.certificates import (
    KEY_COMPROMISE,
    KeyBlock,
    RevocationChange,
    RevocationOutcome,
    queue_sweep,
    revoke_serial,
)


@dataclass(frozen=True)
class Sweep:
    id: int
    spki_sha256: bytes
    compromised_at: datetime
    requested_by: str
    reason: str
    status: str  #: ``queued`` (running while its lease holds) or ``done``
    attempts: int
    run_after: datetime
    locked_by: str | None
    locked_until: datetime | None
    revoked: int  #: serials revoked by this sweep
    updated: int  #: serials revoked before for another reason, now keyCompromise
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


def _sweep(row: asyncpg.Record) -> Sweep:
    return Sweep(
        id=row["id"],
        spki_sha256=bytes(row["spki_sha256"]),
        compromised_at=row["compromised_at"],
        requested_by=row["requested_by"],
        reason=row["reason"],
        status=row["status"],
        attempts=row["attempts"],
        run_after=row["run_after"],
        locked_by=row["locked_by"],
        locked_until=row["locked_until"],
        revoked=row["revoked"],
        updated=row["updated"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


class SweepLost(Exception):
    """The sweep's lease passed to another worker: stop, it carries on."""


class KeyCompromiseRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(self, worker_id: str, *, now: datetime, lease: timedelta) -> Sweep | None:
        """The oldest due sweep nobody holds, now ours until ``now + lease``."""
        row = await self._pool.fetchrow(
            """UPDATE key_compromise_sweeps SET locked_by = $1, locked_until = $3,
                                               attempts = attempts + 1
               WHERE id = (SELECT id FROM key_compromise_sweeps
                           WHERE status = 'queued' AND run_after <= $2
                             AND (locked_until IS NULL OR locked_until < $2)
                           ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
               RETURNING *""",
            worker_id,
            now,
            now + lease,
        )
        return _sweep(row) if row else None

    async def targets(self, sweep: Sweep, *, now: datetime, limit: int) -> list[str]:
        """Serials with the sweep's key, unexpired, not yet revoked as keyCompromise at (or
        before) the date the sweep writes."""
        rows = await self._pool.fetch(
            """SELECT serial FROM (
                   SELECT serial, not_before, revoked_at, revocation_reason FROM certificates
                   WHERE spki_sha256 = $1 AND not_after > $3
                   UNION ALL
                   SELECT serial, not_before, revoked_at, revocation_reason FROM precertificates
                   WHERE spki_sha256 = $1 AND not_after > $3
               ) s
               WHERE revoked_at IS NULL OR revocation_reason IS DISTINCT FROM 1
                  OR revoked_at > GREATEST($2::timestamptz, not_before)
               GROUP BY serial ORDER BY serial LIMIT $4""",
            sweep.spki_sha256,
            sweep.compromised_at,
            now,
            limit,
        )
        return [r["serial"] for r in rows]

    async def revoke(
        self, sweep: Sweep, serial: str, *, worker_id: str, now: datetime
    ) -> RevocationChange | None:
        """Revoke one serial for the sweep (keyCompromise, dated ``compromised_at``), audited
        and counted; raises :class:`SweepLost` if the lease is no longer ours."""
        async with self._pool.acquire() as conn, conn.transaction():
            held = await conn.fetchval(
                "SELECT 1 FROM key_compromise_sweeps WHERE id = $1 AND locked_by = $2 "
                "AND status = 'queued' FOR UPDATE",
                sweep.id,
                worker_id,
            )
            if held is None:
                raise SweepLost(sweep.id)
            change = await revoke_serial(
                conn,
                serial,
                reason=KEY_COMPROMISE,
                at=sweep.compromised_at,
                now=now,
                actor=f"key-compromise-sweep:{sweep.id}",
                details={"sweep_id": sweep.id, "requested_by": sweep.requested_by},
            )
            if change is not None:
                await conn.execute(
                    """UPDATE key_compromise_sweeps
                       SET revoked = revoked + CASE WHEN $2 THEN 1 ELSE 0 END,
                           updated = updated + CASE WHEN $2 THEN 0 ELSE 1 END
                       WHERE id = $1""",
                    sweep.id,
                    change.outcome is RevocationOutcome.REVOKED,
                )
        return change

    async def extend(self, sweep: Sweep, *, worker_id: str, until: datetime) -> bool:
        """Keep the lease; False if another worker holds the sweep now."""
        status: str = await self._pool.execute(
            "UPDATE key_compromise_sweeps SET locked_until = $3 "
            "WHERE id = $1 AND locked_by = $2 AND status = 'queued'",
            sweep.id,
            worker_id,
            until,
        )
        return status == "UPDATE 1"

    async def finish(self, sweep: Sweep, *, worker_id: str, now: datetime) -> Sweep | None:
        """Mark the sweep done (audited as ``key_compromise.sweep_done``); None if the lease
        was lost."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """UPDATE key_compromise_sweeps SET status = 'done', finished_at = $3,
                                                   locked_by = NULL, locked_until = NULL,
                                                   last_error = NULL
                   WHERE id = $1 AND locked_by = $2 AND status = 'queued' RETURNING *""",
                sweep.id,
                worker_id,
                now,
            )
            if row is None:
                return None
            done = _sweep(row)
            await record_event(
                conn,
                "key_compromise.sweep_done",
                at=now,
                actor=f"key-compromise-sweep:{sweep.id}",
                details={
                    "sweep_id": done.id,
                    "spki_sha256": done.spki_sha256.hex(),
                    "revoked": done.revoked,
                    "updated": done.updated,
                    "seconds": (now - done.created_at).total_seconds(),
                },
            )
        return done

    async def fail(self, sweep: Sweep, *, worker_id: str, error: str, retry_at: datetime) -> None:
        """Give the sweep back after a failure, to be retried from ``retry_at``."""
        await self._pool.execute(
            """UPDATE key_compromise_sweeps SET locked_by = NULL, locked_until = NULL,
                                               last_error = $3, run_after = $4
               WHERE id = $1 AND locked_by = $2 AND status = 'queued'""",
            sweep.id,
            worker_id,
            error[:2000],
            retry_at,
        )

    async def get(self, sweep_id: int) -> Sweep | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM key_compromise_sweeps WHERE id = $1", sweep_id
        )
        return _sweep(row) if row else None

    async def recent(self, limit: int = 50) -> list[Sweep]:
        """Queued sweeps first, then the latest done ones (operators' progress view)."""
        rows = await self._pool.fetch(
            "SELECT * FROM key_compromise_sweeps "
            "ORDER BY (status = 'queued') DESC, id DESC LIMIT $1",
            limit,
        )
        return [_sweep(r) for r in rows]

    async def overdue(self, *, queued_before: datetime) -> list[Sweep]:
        """Sweeps still queued that were queued before ``queued_before``."""
        rows = await self._pool.fetch(
            "SELECT * FROM key_compromise_sweeps WHERE status = 'queued' AND created_at < $1 "
            "ORDER BY id",
            queued_before,
        )
        return [_sweep(r) for r in rows]

    async def requeue_late_issuance(self, *, now: datetime) -> list[int]:
        """A new sweep for every swept key that has an unexpired certificate or precertificate
        not revoked as keyCompromise (one signed from a CSR checked before the key was blocked)
        and no sweep waiting; returns the new sweeps' ids."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT DISTINCT ON (s.spki_sha256) s.spki_sha256, s.compromised_at, s.id
                   FROM key_compromise_sweeps s
                   WHERE s.status = 'done'
                     AND NOT EXISTS (SELECT 1 FROM key_compromise_sweeps q
                                     WHERE q.spki_sha256 = s.spki_sha256
                                       AND q.status = 'queued')
                     AND (EXISTS (SELECT 1 FROM certificates c
                                  WHERE c.spki_sha256 = s.spki_sha256 AND c.not_after > $1
                                    AND (c.revoked_at IS NULL
                                         OR c.revocation_reason IS DISTINCT FROM 1))
                          OR EXISTS (SELECT 1 FROM precertificates p
                                     WHERE p.spki_sha256 = s.spki_sha256 AND p.not_after > $1
                                       AND (p.revoked_at IS NULL
                                            OR p.revocation_reason IS DISTINCT FROM 1)))
                   ORDER BY s.spki_sha256, s.compromised_at""",
                now,
            )
            queued = []
            for row in rows:
                block = KeyBlock(
                    bytes(row["spki_sha256"]),
                    f"certificates with a key swept by sweep {row['id']} appeared later",
                    "key-compromise-recheck",
                    compromise=True,
                    compromised_at=row["compromised_at"],
                )
                queued.append(await queue_sweep(conn, block, now))
        return queued

    async def unexpired_without_key_hash(self, now: datetime) -> int:
        """Unexpired certificates and precertificates whose DER gave no SPKI hash: no sweep can
        find them (expected: zero)."""
        count: int = await self._pool.fetchval(
            """SELECT (SELECT count(*) FROM certificates
                       WHERE spki_sha256 IS NULL AND not_after > $1)
                    + (SELECT count(*) FROM precertificates
                       WHERE spki_sha256 IS NULL AND not_after > $1)""",
            now,
        )
        return count
