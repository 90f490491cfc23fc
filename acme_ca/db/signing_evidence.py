"""What the signing-time re-check (:mod:`acme_ca.ca.signing_checks`) reads and records in
storage: whether the CSR's key is blocked and how the order's authorizations were validated,
in one snapshot, and the audit of a CAA recheck made just before signing.  Kept apart from
:mod:`acme_ca.db.issuance` (the job's steps and leases), whose
:class:`~acme_ca.db.issuance.IssuanceRepository` calls these for the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from acme_ca.acme.jsontypes import JsonObject
from acme_ca.acme.problems import Problem
from acme_ca.db.audit import record_event
from acme_ca.db.issuance_jobs import AuthorizationEvidence, IssuanceJob

#: What the signing re-check reads, in one statement: whether the CSR's key is blocked, and
#: the order's authorizations in position order, each with its most recent valid challenge
#: (one row with NULL authorization columns when the order has none).
_SIGNING_EVIDENCE = """SELECT b.blocked, x.*
   FROM (SELECT EXISTS (SELECT 1 FROM blocked_keys WHERE spki_sha256 = $2) AS blocked) b
   LEFT JOIN LATERAL (
       SELECT a.id, a.identifier, a.wildcard, a.status, a.expires_at, a.validated_at,
              a.caa_checked_at, c.type, c.validation_records, oa.position
       FROM order_authorizations oa
       JOIN authorizations a ON a.id = oa.authz_id
       LEFT JOIN LATERAL (
           SELECT type, validation_records FROM challenges
           WHERE authz_id = a.id AND status = 'valid'
           ORDER BY validated_at DESC LIMIT 1) c ON true
       WHERE oa.order_id = $1) x ON true
   ORDER BY x.position"""


def _evidence(rows: Sequence[asyncpg.Record]) -> list[AuthorizationEvidence]:
    return [
        AuthorizationEvidence(
            authz_id=r["id"],
            identifier=r["identifier"],
            wildcard=r["wildcard"],
            status=r["status"],
            expires_at=r["expires_at"],
            validated_at=r["validated_at"],
            caa_checked_at=r["caa_checked_at"],
            method=r["type"],
            records=list(r["validation_records"] or []),
        )
        for r in rows
    ]


async def signing_evidence(
    pool: asyncpg.Pool, order_id: int, spki_sha256: bytes
) -> tuple[bool, list[AuthorizationEvidence]]:
    """Whether the key ``spki_sha256`` is blocked, and the order's authorizations, each with
    its most recent valid challenge: what the signing re-check reads, in one round trip and
    one snapshot (issue 20: they were two statements)."""
    rows = await pool.fetch(_SIGNING_EVIDENCE, order_id, spki_sha256)
    return bool(rows[0]["blocked"]), _evidence([r for r in rows if r["id"] is not None])


async def record_caa_recheck(
    pool: asyncpg.Pool,
    job: IssuanceJob,
    worker_id: str,
    *,
    authz_id: int,
    identifier: str,
    checked_at: datetime,
    ok: bool,
    records: Sequence[JsonObject],
    problem: Problem | None,
    now: datetime,
) -> None:
    """Audit a CAA recheck made before signing (BR 3.2.2.8: with its records) and, when
    it allowed issuance, make ``checked_at`` the authorization's CAA check time."""
    async with pool.acquire() as conn, conn.transaction():
        if ok:
            await conn.execute(
                """UPDATE authorizations SET caa_checked_at = $2
                   WHERE id = $1 AND (caa_checked_at IS NULL OR caa_checked_at < $2)""",
                authz_id,
                checked_at,
            )
        await record_event(
            conn,
            "caa.rechecked",
            at=now,
            actor=f"worker:{worker_id}",
            account_id=job.account_id,
            order_id=job.order_id,
            details={
                "identifier": identifier,
                "authz_id": authz_id,
                "job_id": job.id,
                "checked_at": checked_at.isoformat(),
                "ok": ok,
                "records": list(records),
                **({"problem": problem.to_json()} if problem is not None else {}),
            },
        )
