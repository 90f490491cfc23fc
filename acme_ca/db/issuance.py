"""Issuance jobs: enqueued at finalize, taken by signing workers, each step recorded.

The job row is the worker's checkpoint and ``step`` says how far it got: ``queued`` →
``prepared`` (serial, validity, precertificate TBS and linted copy fixed) → ``precert_signed``
(the signed precertificate stored; from then on it counts as issued) → ``scts_collected``
(SCTs, final TBS and linted copy fixed) → ``issued`` (certificate stored, order valid).
``claim`` takes a queued job whose ``retry_at`` has come (or a running one whose worker's
lease lapsed) with ``FOR UPDATE SKIP LOCKED`` and returns the typed view of its step
(:mod:`acme_ca.db.issuance_jobs`: each carries exactly the columns its step has recorded, none
of them optional).  ``defer`` sends a job whose SCTs fell short back to the queue until its
backoff ends; ``complete`` stores the certificate and moves the order to valid in one
transaction, and the unique constraints on serial and order make a second certificate
impossible.

Every recording moves the step on with a conditional update (``WHERE step = <the one
before> AND locked_by = <this worker>``) and returns the row as recorded, so a worker that
lost its lease continues with (or stops at) what another worker recorded, never with its own
second version.  What the signing-time re-check reads and records is
:mod:`acme_ca.db.signing_evidence`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from acme_ca.acme.jsontypes import JsonObject, JsonValue
from acme_ca.acme.problems import Problem
from acme_ca.acme.states import OrderEvent
from acme_ca.db.audit import current_request_id, record_event
from acme_ca.db.completions import ORDER_DONE_CHANNEL, notify_order_done
from acme_ca.db.issuance_jobs import (
    AuthorizationEvidence,
    IssuanceJob,
    IssuedCertificate,
    PreparedJob,
    job_from_row,
)
from acme_ca.db.order_events import (
    ORDER_EVENT_CTE,
    Order,
    apply_order_event,
    order_event_args,
    order_event_statement,
    order_from_row,
)
from acme_ca.db.signing_evidence import record_caa_recheck, signing_evidence

NOTIFY_CHANNEL = "acme_ca_issuance"


def _sct_summaries(scts: Sequence[JsonObject]) -> list[dict[str, JsonValue]]:
    """Log, operator and timestamp of each SCT: what the order timeline shows."""
    return [{k: s.get(k) for k in ("log", "operator", "timestamp")} for s in scts]


#: Finalize in one statement (issue 20): the order ready -> processing (``o``, $1-$6 of
#: db/orders.order_event_args), its queued job, the ``NOTIFY`` that wakes the workers (sent
#: at commit) and the audit row, inserted after the order's row lock and the job, as
#: db/audit.py asks; nothing but the select of ``o`` when the order did not move.
_ENQUEUE_CTES = """,
    j AS (
        INSERT INTO issuance_jobs (order_id, account_id, csr_der, names, status, issuer,
                                   profile, created_at, updated_at)
        SELECT o.id, $7::bigint, $8::bytea, $9::jsonb, 'queued', $10::text, $11::text,
               $4, $4
        FROM o
        RETURNING id, pg_notify($15::text, '')),
    a AS (
        INSERT INTO audit_events (at, event, actor, account_id, order_id, request_id, details)
        SELECT $4::timestamptz, 'order.processing', $12::text, $7::bigint, o.id, $13::text,
               $14::jsonb
        FROM o, j)
"""
_ENQUEUE = order_event_statement(_ENQUEUE_CTES)

#: A certificate stored in one statement (issue 20), in the order of the transaction it
#: replaces: the order -> valid (``o``: its row lock first), the certificate (none if it was
#: stored already), the job done, the completion NOTIFY (sent at commit) and, only when the
#: certificate is new, its audit row, which runs after the rest (it reads ``c`` and ``j``).
_COMPLETE_CTES = """,
    c AS (
        INSERT INTO certificates (order_id, account_id, serial, issuer, der, not_before,
                                  not_after, chain_pem, alternate_chains, created_at, scts)
        VALUES ($1[1], $7::bigint, $8::text, $9::text, $10::bytea, $11::timestamptz,
                $12::timestamptz, $13::text, $14::jsonb, $4, $15::jsonb)
        ON CONFLICT DO NOTHING
        RETURNING id),
    j AS (
        UPDATE issuance_jobs SET status = 'done', step = 'issued', locked_by = NULL,
               locked_until = NULL, updated_at = $4
        WHERE id = $16::bigint
        RETURNING id),
    a AS (
        INSERT INTO audit_events (at, event, actor, account_id, order_id, request_id, details)
        SELECT $4::timestamptz, 'certificate.issued', 'ca', $7::bigint, $1[1], $17::text,
               $18::jsonb
        FROM c, j)
    SELECT (SELECT count(*) FROM o) AS moved,
           (SELECT id FROM c) AS certificate_id,
           (SELECT count(*) FROM j) AS done,
           pg_notify($19::text, ($1[1])::text) AS notified
"""
_COMPLETE = ORDER_EVENT_CTE + _COMPLETE_CTES


class IssuanceRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _as_recorded(self, row: asyncpg.Record | None, job: IssuanceJob) -> IssuanceJob:
        """The job as the step's statement recorded it, else (it did not move the step: another
        worker's) as that worker left it, read afresh.

        Each step is one statement (issue 20): a CTE ``u`` with the conditional UPDATE, the
        audit row inserted from ``u`` (so only when the step moved, after the job's row lock
        was taken, as db/audit.py asks), the job row returned. In one implicit transaction the
        audit chain's head is held until that statement commits, never across a round trip."""
        if row is None:
            row = await self._pool.fetchrow("SELECT * FROM issuance_jobs WHERE id = $1", job.id)
        return job_from_row(row)

    async def enqueue(
        self,
        *,
        order_id: int,
        account_id: int,
        csr_der: bytes,
        names: list[str],
        issuer: str,
        now: datetime,
        profile: str = "dv",
    ) -> Order | None:
        """ready → processing and a queued job, atomically: the order as moved, or None if it
        was not ready (or had expired)."""
        row = await self._pool.fetchrow(
            _ENQUEUE,
            *order_event_args(OrderEvent.FINALIZED, [order_id], now),
            account_id,
            csr_der,
            names,
            issuer,
            profile,
            f"account:{account_id}",
            current_request_id(),
            {"issuer": issuer, "profile": profile},
            NOTIFY_CHANNEL,
        )
        return order_from_row(row) if row is not None else None

    async def claim(self, worker_id: str, *, now: datetime, lease: timedelta) -> IssuanceJob | None:
        row = await self._pool.fetchrow(
            """UPDATE issuance_jobs SET status = 'running', attempts = attempts + 1,
                      locked_by = $1, locked_until = $2::timestamptz + $3::interval,
                      updated_at = $2
               WHERE id = (SELECT id FROM issuance_jobs
                           WHERE (status = 'queued' AND (retry_at IS NULL OR retry_at <= $2))
                              OR (status = 'running' AND locked_until < $2)
                           ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
               RETURNING *""",
            worker_id,
            now,
            lease,
        )
        return job_from_row(row) if row else None

    async def record_prepared(
        self,
        job: IssuanceJob,
        worker_id: str,
        *,
        serial: str,
        not_before: datetime,
        not_after: datetime,
        precert_tbs_der: bytes,
        precert_lint_der: bytes,
        now: datetime,
        lint_findings: Sequence[str] = (),
        lint_kind: str = "DV-PRE-CERTIFICATE",
    ) -> IssuanceJob:
        """queued → prepared: fix serial, validity and the precertificate's TBS and linted
        copy, once; a job another worker took or prepared comes back as that worker left it.
        ``lint_findings`` (the linter's non-blocking findings, of the ``lint_kind`` rules) go
        to the audit row, for the order's timeline."""
        row = await self._pool.fetchrow(
            """WITH u AS (
                   UPDATE issuance_jobs SET step = 'prepared', serial = $3, not_before = $4,
                          not_after = $5, precert_tbs_der = $6, precert_lint_der = $7,
                          updated_at = $8
                   WHERE id = $1 AND locked_by = $2 AND step = 'queued'
                   RETURNING *),
               a AS (
                   INSERT INTO audit_events (at, event, actor, account_id, order_id,
                                             request_id, details)
                   SELECT $8::timestamptz, $9::text, $10::text, u.account_id, u.order_id,
                          $11::text, $12::jsonb
                   FROM u)
               SELECT * FROM u""",
            job.id,
            worker_id,
            serial,
            not_before,
            not_after,
            precert_tbs_der,
            precert_lint_der,
            now,
            "issuance.prepared",
            f"worker:{worker_id}",
            current_request_id(),
            {
                "serial": serial,
                "job_id": job.id,
                "precertificate": True,
                "lint": {"profile": lint_kind, "findings": list(lint_findings)},
            },
        )
        return await self._as_recorded(row, job)

    async def record_precertificate(
        self, job: IssuanceJob, worker_id: str, der: bytes, now: datetime
    ) -> IssuanceJob:
        """prepared → precert_signed: store the signed precertificate, once per job, and the
        start of its submission.

        From this commit on the serial counts as issued (BR 7.1.2.9): the precertificate is in
        ``precertificates`` (OCSP answers for it) and on the job, which every later step reuses.
        Another worker's precertificate, recorded first, wins: the row returned carries it.
        """
        row = await self._pool.fetchrow(
            """WITH u AS (
                   UPDATE issuance_jobs SET step = 'precert_signed', precert_der = $3,
                          ct_submitted_at = coalesce(ct_submitted_at, $4), updated_at = $4
                   WHERE id = $1 AND locked_by = $2 AND step = 'prepared'
                   RETURNING *),
               p AS (
                   INSERT INTO precertificates (job_id, order_id, account_id, serial, issuer,
                                                der, not_before, not_after, created_at)
                   SELECT u.id, u.order_id, u.account_id, u.serial, u.issuer, $3,
                          u.not_before, u.not_after, $4
                   FROM u
                   RETURNING 1),
               a AS (
                   INSERT INTO audit_events (at, event, actor, account_id, order_id,
                                             request_id, details)
                   SELECT $4::timestamptz, $5::text, $6::text, u.account_id, u.order_id, $7::text,
                          jsonb_build_object('serial', u.serial, 'issuer', u.issuer,
                                             'job_id', u.id)
                   FROM u, p)
               SELECT * FROM u""",
            job.id,
            worker_id,
            der,
            now,
            "precertificate.issued",
            f"worker:{worker_id}",
            current_request_id(),
        )
        return await self._as_recorded(row, job)

    async def record_scts(
        self,
        job: IssuanceJob,
        worker_id: str,
        *,
        scts: list[dict[str, JsonValue]],
        tbs_der: bytes,
        lint_der: bytes,
        now: datetime,
    ) -> IssuanceJob:
        """precert_signed → scts_collected: fix the SCTs and the final certificate's TBS and
        linted copy, once."""
        row = await self._pool.fetchrow(
            """WITH u AS (
                   UPDATE issuance_jobs SET step = 'scts_collected', scts = $3, tbs_der = $4,
                          lint_der = $5, error = NULL, updated_at = $6
                   WHERE id = $1 AND locked_by = $2 AND step = 'precert_signed'
                   RETURNING *),
               a AS (
                   INSERT INTO audit_events (at, event, actor, account_id, order_id,
                                             request_id, details)
                   SELECT $6::timestamptz, $7::text, $8::text, u.account_id, u.order_id, $9::text,
                          jsonb_build_object('serial', u.serial, 'scts', $10::jsonb)
                   FROM u)
               SELECT * FROM u""",
            job.id,
            worker_id,
            scts,
            tbs_der,
            lint_der,
            now,
            "ct.scts_collected",
            f"worker:{worker_id}",
            current_request_id(),
            _sct_summaries(scts),
        )
        return await self._as_recorded(row, job)

    async def defer(
        self,
        job: IssuanceJob,
        worker_id: str,
        *,
        retry_at: datetime,
        details: JsonObject,
        now: datetime,
        event: str = "ct.deferred",
    ) -> bool:
        """Back to the queue until ``retry_at`` (CT policy not met yet, or the HSM failing:
        ``event`` names the audit event); False if this worker no longer holds the job."""
        async with self._pool.acquire() as conn, conn.transaction():
            updated = await conn.execute(
                """UPDATE issuance_jobs SET status = 'queued', retry_at = $3,
                          deferrals = deferrals + 1, error = $4, locked_by = NULL,
                          locked_until = NULL, updated_at = $5
                   WHERE id = $1 AND locked_by = $2 AND status = 'running'""",
                job.id,
                worker_id,
                retry_at,
                details,
                now,
            )
            if not updated.endswith(" 1"):
                return False
            await record_event(
                conn,
                event,
                at=now,
                actor=f"worker:{worker_id}",
                account_id=job.account_id,
                order_id=job.order_id,
                details={
                    "serial": job.serial if isinstance(job, PreparedJob) else None,
                    "retry_at": retry_at.isoformat(),
                    **details,
                },
            )
        return True

    async def complete(self, job: IssuanceJob, cert: IssuedCertificate, now: datetime) -> bool:
        """scts_collected → issued: store the certificate, order valid, job done; False if it
        was already stored."""
        details: JsonObject = {
            "serial": cert.serial,
            "issuer": cert.issuer,
            "not_after": cert.not_after.isoformat(),
            **({"scts": _sct_summaries(cert.scts)} if cert.scts else {}),
        }
        row = await self._pool.fetchrow(
            _COMPLETE,
            *order_event_args(OrderEvent.ISSUED, [job.order_id], now),
            job.account_id,
            cert.serial,
            cert.issuer,
            cert.der,
            cert.not_before,
            cert.not_after,
            cert.chain_pem,
            cert.alternate_chains,
            cert.scts,
            job.id,
            current_request_id(),
            details,
            ORDER_DONE_CHANNEL,
        )
        assert row is not None
        return row["certificate_id"] is not None

    async def fail(
        self,
        job: IssuanceJob,
        problem: Problem,
        details: JsonObject,
        now: datetime,
        *,
        held_by: str | None = None,
    ) -> bool:
        """Give up on the job: order invalid with ``problem``; details go to the audit log.

        With ``held_by``, only while that worker still holds the running job (a worker whose
        lease lapsed must not fail a job another worker has carried on); False if not.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            # $4 NULL: whoever holds it (the worker's own give-up paths).
            updated = await conn.execute(
                "UPDATE issuance_jobs SET status = 'failed', error = $2, locked_by = NULL, "
                "locked_until = NULL, updated_at = $3 WHERE id = $1 AND ($4::text IS NULL OR "
                "(locked_by = $4 AND status = 'running'))",
                job.id,
                details,
                now,
                held_by,
            )
            if not updated.endswith(" 1"):
                return False
            await apply_order_event(
                conn,
                OrderEvent.ISSUANCE_FAILED,
                [job.order_id],
                now,
                error=problem,
            )
            await notify_order_done(conn, job.order_id)
            await record_event(
                conn,
                "issuance.failed",
                at=now,
                actor="ca",
                account_id=job.account_id,
                order_id=job.order_id,
                details=details,
            )
        return True

    async def mark_done(self, job: IssuanceJob, now: datetime) -> None:
        """Finish a job whose certificate is already stored (the order moves to valid)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await apply_order_event(conn, OrderEvent.ISSUED, [job.order_id], now)
            await conn.execute(
                "UPDATE issuance_jobs SET status = 'done', step = 'issued', locked_by = NULL, "
                "locked_until = NULL, updated_at = $2 WHERE id = $1",
                job.id,
                now,
            )
            await notify_order_done(conn, job.order_id)

    async def signing_evidence(
        self, order_id: int, spki_sha256: bytes
    ) -> tuple[bool, list[AuthorizationEvidence]]:
        """Whether the key is blocked, and the order's authorizations as validated
        (:func:`acme_ca.db.signing_evidence.signing_evidence`)."""
        return await signing_evidence(self._pool, order_id, spki_sha256)

    async def record_caa_recheck(
        self,
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
        """Audit a CAA recheck made before signing
        (:func:`acme_ca.db.signing_evidence.record_caa_recheck`)."""
        await record_caa_recheck(
            self._pool,
            job,
            worker_id,
            authz_id=authz_id,
            identifier=identifier,
            checked_at=checked_at,
            ok=ok,
            records=records,
            problem=problem,
            now=now,
        )

    async def listen(self, callback: Any) -> asyncpg.Connection:
        """A dedicated connection notified when jobs are enqueued (caller closes it)."""
        conn = await self._pool.acquire()
        await conn.add_listener(NOTIFY_CHANNEL, callback)
        return conn

    @staticmethod
    def listener_alive(conn: asyncpg.Connection) -> bool:
        """False once the listening connection is gone (the server restarted): the pool has
        then taken its proxy back, so LISTEN again on a new one."""
        try:
            return not conn.is_closed()
        except asyncpg.InterfaceError:  # released back to the pool when its server went
            return False

    async def release_listener(self, conn: asyncpg.Connection, callback: Any) -> None:
        # A listener whose server connection was lost has already been given back by the
        # pool (its proxy is detached and raises InterfaceError); there is nothing to undo.
        with contextlib.suppress(asyncpg.InterfaceError):
            await conn.remove_listener(NOTIFY_CHANNEL, callback)
        await self._pool.release(conn)

    async def is_key_blocked(self, spki_sha256: bytes) -> bool:
        found = await self._pool.fetchval(
            "SELECT 1 FROM blocked_keys WHERE spki_sha256 = $1", spki_sha256
        )
        return found is not None

    # ------------------------------------------------------------------ leases

    async def renew_lease(
        self, job_id: int, worker_id: str, *, now: datetime, lease: timedelta
    ) -> bool:
        """Extend the lease of a job this worker still holds; False if it no longer does."""
        updated = await self._pool.execute(
            """UPDATE issuance_jobs SET locked_until = $3::timestamptz + $4::interval
               WHERE id = $1 AND locked_by = $2 AND status = 'running'""",
            job_id,
            worker_id,
            now,
            lease,
        )
        return bool(updated.endswith(" 1"))

    async def release_lease(self, job_id: int, worker_id: str, *, now: datetime) -> bool:
        """End this worker's lease on a job it stopped carrying (the database went away
        mid-step): claimable at once, it resumes at its recorded step. False if the job is
        no longer this worker's, or no longer running (its last write did commit)."""
        updated = await self._pool.execute(
            """UPDATE issuance_jobs SET locked_until = $3::timestamptz - interval '1 millisecond'
               WHERE id = $1 AND locked_by = $2 AND status = 'running'""",
            job_id,
            worker_id,
            now,
        )
        return bool(updated.endswith(" 1"))

    async def lease_holders(self, prefix: str, *, now: datetime) -> list[str]:
        """Workers named ``prefix...`` holding a running job whose lease has not lapsed."""
        rows = await self._pool.fetch(
            """SELECT DISTINCT locked_by FROM issuance_jobs
               WHERE status = 'running' AND locked_until >= $2
                 AND starts_with(locked_by, $1)""",
            prefix,
            now,
        )
        return [r["locked_by"] for r in rows]

    async def release_leases(self, holder: str, *, now: datetime) -> list[int]:
        """End the leases ``holder`` has (its process is gone): its running jobs are
        claimable at once and resume at their recorded step."""
        rows = await self._pool.fetch(
            """UPDATE issuance_jobs SET locked_until = $2::timestamptz - interval '1 millisecond'
               WHERE locked_by = $1 AND status = 'running' AND locked_until >= $2
               RETURNING id""",
            holder,
            now,
        )
        return [r["id"] for r in rows]
