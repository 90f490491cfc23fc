"""The signing worker: turns queued issuance jobs into certificates, crash-safely.

Jobs come from PostgreSQL (``FOR UPDATE SKIP LOCKED``); a worker wakes on ``LISTEN/NOTIFY``
and also polls, because notifications can be lost. Each job runs in recorded steps:

1. prepare: choose serial and validity, build the TBS, sign a copy with a throwaway key and
   lint it (BR 4.3.1.2); an ERROR or FATAL finding fails the order with ``serverInternal``;
2. record serial, validity, TBS and the linted copy (before the HSM signs anything, so
   whatever it signs can be found and revoked after a crash);
3. have the signer sign exactly the recorded TBS bytes;
4. store the certificate and mark the order valid, in one transaction.

A worker killed anywhere leaves a job whose lease lapses; the next worker resumes at the
first step not recorded, with the same serial. The unique constraints on serial and on the
certificate's order make a second certificate impossible.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from acme_ca.acme import problems
from acme_ca.ca.der import sign_tbs_certificate
from acme_ca.ca.issuers import Issuer, IssuerSet, load_issuers
from acme_ca.ca.lint import CertificateLinter
from acme_ca.ca.profile import IssuanceRequest, ProfileSettings, build_certificate, new_serial
from acme_ca.clock import Clock
from acme_ca.config import Config
from acme_ca.db.issuance import IssuanceJob, IssuanceRepository, IssuedCertificate
from acme_ca.db.status import StatusRepository
from acme_ca.db.storage import open_storage
from acme_ca.status.updater import (
    PublishingIssuanceRepository,
    StatusSettings,
    StatusUpdater,
    close_authorities,
    open_root_authorities,
)

log = structlog.get_logger(component="acme_ca.ca.worker")

DEFAULT_LEASE = timedelta(minutes=2)
#: After this many attempts a job is a permanent fault (unknown issuer, a TBS the HSM refuses):
#: the order fails with serverInternal instead of staying `processing` for ever.
MAX_ATTEMPTS = 10
#: Pause after a database error in the claim loop before trying again.
CLAIM_ERROR_BACKOFF = 2.0


def _pem(certs: Any) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


class SigningWorker:
    def __init__(
        self,
        jobs: IssuanceRepository,
        issuers: IssuerSet,
        linter: CertificateLinter,
        clock: Clock,
        *,
        profile_for: Callable[[Issuer], ProfileSettings],
        poll_seconds: float = 5.0,
        lease: timedelta = DEFAULT_LEASE,
        worker_id: str | None = None,
    ) -> None:
        self._jobs = jobs
        self._issuers = issuers
        self._linter = linter
        self._clock = clock
        self._profile_for = profile_for
        self._poll = poll_seconds
        self._lease = lease
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set: drain the queue, then wait for NOTIFY or the poll."""

        def notified(*_: Any) -> None:
            self._wake.set()

        listener = await self._jobs.listen(notified)
        log.info("worker.started", worker_id=self.worker_id, issuers=self._issuers.names())
        try:
            while not stop.is_set():
                # Clear before draining, not after: a NOTIFY that arrives while the last
                # (empty) claim is in flight must still cut the following wait short.
                self._wake.clear()
                try:
                    while not stop.is_set() and await self.run_once():
                        pass
                except Exception as exc:
                    # The database went away between jobs (claim lives outside run_once's
                    # guard): keep the worker alive and try again shortly.
                    log.warning("worker.claim_failed", error=repr(exc))
                    await asyncio.sleep(CLAIM_ERROR_BACKOFF)
                waiters = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
                await asyncio.wait(waiters, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED)
                for task in waiters:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            await self._jobs.release_listener(listener, notified)
            log.info("worker.stopped", worker_id=self.worker_id)

    async def run_once(self) -> bool:
        """Take one job and carry it as far as it goes; False when the queue is empty."""
        job = await self._jobs.claim(self.worker_id, now=self._clock.now(), lease=self._lease)
        if job is None:
            return False
        structlog.contextvars.bind_contextvars(
            job_id=job.id, order_id=job.order_id, account_id=job.account_id
        )
        try:
            await self._process(job)
        except Exception:
            # Leave the job to a retry after the lease: a transient HSM or database fault
            # must not lose the order. Permanent faults surface in the logs each attempt.
            log.exception("issuance.attempt_failed", attempts=job.attempts)
        finally:
            structlog.contextvars.unbind_contextvars("job_id", "order_id", "account_id")
        return True

    async def _process(self, job: IssuanceJob) -> None:
        if job.attempts > MAX_ATTEMPTS:
            await self._jobs.fail(
                job,
                problems.server_internal("issuance kept failing inside the CA").to_json(),
                {"reason": "too many attempts", "attempts": job.attempts},
                self._clock.now(),
            )
            log.error("issuance.given_up", attempts=job.attempts)
            return
        assert job.issuer is not None
        issuer = self._issuers.by_name(job.issuer)
        if job.serial is None:
            prepared_job = await self._prepare(job, issuer)
            if prepared_job is None:
                return
            job = prepared_job
        else:
            log.info("issuance.resumed", serial=job.serial, attempts=job.attempts)
            if await self._jobs.certificate_for_order(job.order_id):
                # Stored before the crash: only the bookkeeping is left, sign nothing again.
                await self._jobs.mark_done(job, self._clock.now())
                log.info("issuance.already_complete", serial=job.serial)
                return
        assert job.tbs_der is not None and job.serial is not None
        assert job.not_before is not None and job.not_after is not None
        cert = await sign_tbs_certificate(job.tbs_der, issuer.signer, issuer.hash)
        log.info("issuance.signed", serial=job.serial, issuer=issuer.name)
        stored = await self._jobs.complete(
            job,
            IssuedCertificate(
                serial=job.serial,
                issuer=issuer.name,
                der=cert.public_bytes(Encoding.DER),
                not_before=job.not_before,
                not_after=job.not_after,
                chain_pem=_pem((issuer.certificate, *issuer.chain)),
                alternate_chains=[
                    _pem((issuer.certificate, *chain)) for chain in issuer.alternate_chains
                ],
            ),
            self._clock.now(),
        )
        log.info(
            "certificate.issued" if stored else "issuance.already_complete",
            serial=job.serial,
            issuer=issuer.name,
            names=list(job.names),
            not_after=job.not_after.isoformat(),
        )

    async def _prepare(self, job: IssuanceJob, issuer: Issuer) -> IssuanceJob | None:
        csr = x509.load_der_x509_csr(job.csr_der)
        signing_time = self._clock.now()
        prepared = build_certificate(
            issuer.certificate,
            issuer.signer.public_key,
            issuer.hash,
            self._profile_for(issuer),
            IssuanceRequest(
                names=job.names,
                public_key=csr.public_key(),  # type: ignore[arg-type]
                serial=new_serial(),
                signing_time=signing_time,
            ),
        )
        report = await self._linter.alint(
            prepared.lint_der, "DV-FINAL-CERTIFICATE", signing_time
        )
        if report.blocking:
            findings = [str(f) for f in report.blocking]
            log.error("issuance.lint_failed", findings=findings)
            await self._jobs.fail(
                job,
                problems.server_internal(
                    "the certificate failed pre-issuance linting; nothing was signed"
                ).to_json(),
                {"reason": "pre-issuance lint", "findings": findings},
                self._clock.now(),
            )
            return None
        recorded = await self._jobs.record_prepared(
            job.id,
            self.worker_id,
            serial=format(prepared.serial, "x"),
            not_before=prepared.not_before,
            not_after=prepared.not_after,
            tbs_der=prepared.tbs_der,
            lint_der=prepared.lint_der,
            now=self._clock.now(),
        )
        log.info(
            "issuance.prepared",
            serial=recorded.serial,
            issuer=issuer.name,
            lint_findings=len(report.findings),
        )
        return recorded


def profile_settings_factory(config: Any) -> Any:
    """ProfileSettings for an issuer from the configuration and the issuer's URLs."""

    def settings(issuer: Issuer) -> ProfileSettings:
        return ProfileSettings(
            policy_oid=config.policy_oid,
            crl_url=issuer.crl_url,
            ocsp_url=issuer.ocsp_url,
            ca_issuers_url=issuer.ca_issuers_url,
            validity_days=config.validity_days,
            backdate=timedelta(seconds=config.backdate_seconds),
            include_subject_key_identifier=config.include_subject_key_identifier,
        )

    return settings


async def run_worker(config: Config, dsn: str, stop: asyncio.Event, clock: Clock) -> None:
    """The worker with everything it needs: storage, issuer keys, a warm linter; and, beside
    it, the status updater that signs CRLs and OCSP responses with the same keys.

    Either task failing stops the other and surfaces its error.
    """
    # Two connections stay LISTENing (issuance jobs, revocations); the rest run queries.
    storage = await open_storage(dsn, max_size=5)
    try:
        issuers = await load_issuers(config, clock=clock)
        try:
            linter = await asyncio.to_thread(CertificateLinter)
            roots = await open_root_authorities(config)
            try:
                updater = StatusUpdater(
                    StatusRepository(storage.pool), issuers, linter, clock,
                    StatusSettings.from_config(config), roots=roots,
                )
                worker = SigningWorker(
                    PublishingIssuanceRepository.for_storage(storage, updater.certificate_issued),
                    issuers, linter, clock,
                    profile_for=profile_settings_factory(config),
                    poll_seconds=float(config.worker_poll_seconds),
                )
                tasks = [
                    asyncio.create_task(worker.run(stop), name="signing-worker"),
                    asyncio.create_task(updater.run(stop), name="status-updater"),
                ]
                try:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                for task in tasks:  # the first failure, as raised (not an ExceptionGroup)
                    error = None if task.cancelled() else task.exception()
                    if error is not None:
                        raise error
            finally:
                await close_authorities(roots)
        finally:
            await issuers.aclose()
    finally:
        await storage.close()
