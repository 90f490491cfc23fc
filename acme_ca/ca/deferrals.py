"""A job the signing worker cannot finish now: back to the queue with backoff, or failed.

When the HSM fails (token absent, HSM error, no session free) or the CT logs cannot give
enough SCTs, nothing more is signed: the job is deferred with backoff and retried with the
same serial, TBS and precertificate, until a deadline after which its order becomes invalid
with a clear error.  A job that met a database outage (a restart, a failover to a new
primary) hands its lease back as soon as the database answers again, so it resumes at once
from its recorded step instead of waiting the lease out.  Kept apart from
:mod:`acme_ca.ca.worker` (the claim loop) and :mod:`acme_ca.ca.issuance_steps` (the step
handlers), so the waiting rules sit side by side here.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import structlog

from acme_ca.acme import problems
from acme_ca.acme.jsontypes import JsonValue
from acme_ca.ca.ct.submit import CertificateTransparency
from acme_ca.ca.signer import SignerError
from acme_ca.clock import Clock
from acme_ca.db.errors import database_unavailable
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.issuance_jobs import IssuanceJob, PrecertSignedJob, PreparedJob

log = structlog.get_logger(component="acme_ca.ca.worker")

#: How long an order waits while the HSM fails (``hsm_deadline_seconds``).
DEFAULT_HSM_DEADLINE = timedelta(hours=1)
#: Backoff after an HSM failure: 1 s doubling, at most this, so a returning token is used soon.
HSM_BACKOFF_MAX = timedelta(seconds=10)
#: How often a job that met a database outage tries to hand its lease back.
OUTAGE_RETRY_SECONDS = 0.5


async def release_when_database_back(
    jobs: IssuanceRepository, clock: Clock, worker_id: str, job: IssuanceJob, lease: timedelta
) -> bool:
    """End ``worker_id``'s lease on ``job`` once the database answers again; True if it did
    (the job is claimable now), False if the job was no longer ours or the lease lapsed
    first (then any worker takes it as usual)."""
    deadline = time.monotonic() + lease.total_seconds()
    while time.monotonic() < deadline:
        try:
            released = await jobs.release_lease(job.id, worker_id, now=clock.now())
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            await asyncio.sleep(OUTAGE_RETRY_SECONDS)
            continue
        log.info("issuance.lease_released", released=released, step=job.step)
        return released
    return False


class Deferrals:
    """One worker's deferrals: ``worker_id`` is the lease holder that gives the job back."""

    def __init__(
        self,
        jobs: IssuanceRepository,
        clock: Clock,
        worker_id: str,
        *,
        ct: CertificateTransparency,
        hsm_deadline: timedelta = DEFAULT_HSM_DEADLINE,
    ) -> None:
        self._jobs = jobs
        self._clock = clock
        self._worker_id = worker_id
        self._ct = ct
        self._hsm_deadline = hsm_deadline

    async def hsm_unavailable(self, job: IssuanceJob, exc: SignerError) -> None:
        """The signer failed (token absent, HSM error, no session free): nothing was
        recorded as signed, so the job goes back to the queue with backoff and is retried
        with the same serial and TBS; past ``hsm_deadline`` the order becomes invalid."""
        now = self._clock.now()
        deadline = job.created_at + self._hsm_deadline
        reason = str(exc) or type(exc).__name__
        if now >= deadline:
            await self._jobs.fail(
                job,
                problems.server_internal(
                    "the CA's signing key was unavailable for longer than "
                    f"{int(self._hsm_deadline.total_seconds())} seconds"
                ),
                {"reason": "hsm unavailable", "error": reason, "step": job.step},
                now,
                held_by=self._worker_id,
            )
            log.error("issuance.hsm_failed", error=reason, step=job.step)
            return
        pause = min(timedelta(seconds=2 ** min(job.deferrals, 6)), HSM_BACKOFF_MAX)
        retry_at = min(now + pause, deadline)
        deferred = await self._jobs.defer(
            job,
            self._worker_id,
            retry_at=retry_at,
            details={"reason": "hsm unavailable", "error": reason},
            now=now,
            event="hsm.deferred",
        )
        log.error(
            "issuance.hsm_unavailable",
            error=reason,
            step=job.step,
            retry_at=retry_at.isoformat(),
            deferrals=job.deferrals + 1,
            deferred=deferred,
        )

    async def ct_unavailable(
        self, job: IssuanceJob, reasons: list[str], *, since: datetime
    ) -> None:
        """Not enough SCTs (or logs) now: back to the queue with backoff, or, past the
        deadline, fail the order (a recorded precertificate stays recorded)."""
        settings = self._ct.settings
        now = self._clock.now()
        deadline = since + settings.deadline
        signed = isinstance(job, PrecertSignedJob)
        serial = job.serial if isinstance(job, PreparedJob) else None
        details: dict[str, JsonValue] = {"reason": "certificate transparency", "reasons": reasons}
        if now >= deadline:
            seconds = int(settings.deadline.total_seconds())
            await self._jobs.fail(
                job,
                problems.server_internal(
                    "the certificate could not be logged to Certificate Transparency as the "
                    f"CA's policy requires: not enough valid SCTs within {seconds} seconds ("
                    + (
                        "its precertificate was signed and stays on record)"
                        if signed
                        else "nothing was signed)"
                    )
                ),
                {**details, "serial": serial, "precertificate": signed},
                now,
            )
            log.error("issuance.ct_failed", serial=serial, reasons=reasons, precertificate=signed)
            return
        retry_at = min(now + settings.backoff(job.deferrals + 1), deadline)
        await self._jobs.defer(job, self._worker_id, retry_at=retry_at, details=details, now=now)
        log.warning(
            "issuance.ct_deferred",
            serial=serial,
            reasons=reasons,
            retry_at=retry_at.isoformat(),
            deferrals=job.deferrals + 1,
        )
