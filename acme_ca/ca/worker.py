"""The signing worker: turns queued issuance jobs into certificates, crash-safely.

Jobs come from PostgreSQL (``FOR UPDATE SKIP LOCKED``); a worker wakes on ``LISTEN/NOTIFY``
and also polls, because notifications can be lost.  Certificate Transparency is always on
(CP 4.3.1: CT before issuance; RFC 6962 §3.1; BR 7.1.2.9).  Each job records the step it has
reached (``issuance_jobs.step``, :class:`acme_ca.db.issuance.Step`) and the worker dispatches
on it to one small handler per step, each taking the typed view of its step and returning
the next one:

``queued`` → :meth:`SigningWorker._prepare` → ``prepared``
    choose serial and validity; check that the usable CT logs covering notAfter can meet the
    CT policy (otherwise nothing is signed and the job waits, see below); build the
    precertificate TBS (the final TBS plus the critical poison, last), sign a copy with a
    throwaway key and lint it as ``DV-PRE-CERTIFICATE`` (BR 4.3.1.2: an ERROR or FATAL
    finding fails the order with ``serverInternal``); record serial, validity, TBS and the
    linted copy before the HSM signs anything, so whatever it signs can be found and revoked.
``prepared`` → :meth:`SigningWorker._sign_precertificate` → ``precert_signed``
    re-check the order with the signing time (:mod:`acme_ca.ca.recheck`: ``signing_guard``,
    the CSR's key not blocked (BR 6.1.1.3(4)), authorizations, BR 4.2.1 reuse, BR 6.3.2
    validity, BR 3.2.2.9 corroboration, CAA older than 8 hours checked again; a refusal fails
    the order and nothing is signed; a prepared job resumed after a crash is re-checked
    again); have the signer sign exactly the recorded TBS and record the precertificate: from
    this commit on it counts as issued (``precertificates``; ``on_issued`` tells the status
    updater, which signs its OCSP responses).
``precert_signed`` → :meth:`SigningWorker._collect_scts` → ``scts_collected``
    submit it with ``add-pre-chain`` to logs chosen by the policy and verify every SCT
    (:mod:`acme_ca.ca.ct.submit`); if the policy is not met, the job goes back to the queue
    with backoff and is retried, with the same precertificate, until ``ct_deadline_seconds``
    after the first submission, then the order becomes invalid with a clear error (the
    precertificate stays recorded).  Build the final TBS: the precertificate's with the SCT
    list extension in the poison's place (:func:`acme_ca.ca.ct.sct.final_tbs`), check that its
    precertificate TBS equals the signed precertificate's (RFC 6962 §3.2): with that control
    BR 4.3.1.2 does not require linting the certificate again, so it is linted as
    ``DV-FINAL-CERTIFICATE`` only with ``lint_final_certificates``; record SCTs, TBS and the
    throwaway-signed copy.
``scts_collected`` → :meth:`SigningWorker._sign_certificate` → ``issued``
    have the signer sign exactly that TBS; store the certificate (with its SCTs) and mark the
    order valid, in one transaction; then send the certificate to the logs (best effort).

A worker killed anywhere leaves a job whose lease lapses; the next worker resumes at the
recorded step, with the same serial and the same precertificate (a job never has two:
``precertificates.job_id`` is unique and each step is recorded only from the step before).
The unique constraints on serial and on the certificate's order make a second certificate
impossible.  The process around the worker (storage, keys, the status updater beside it) is
composed in :mod:`acme_ca.main.worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from acme_ca import metrics
from acme_ca.acme import problems
from acme_ca.ca.ct.sct import final_tbs, remove_poison
from acme_ca.ca.ct.submit import CertificateTransparency, CtPolicyNotMet, LoggedSct
from acme_ca.ca.deferrals import DEFAULT_HSM_DEADLINE, Deferrals, release_when_database_back
from acme_ca.ca.der import sign_tbs_certificate, throwaway_signed_tbs
from acme_ca.ca.issuance_lint import IssuanceLint
from acme_ca.ca.issuance_profiles import IssuanceError, IssuanceProfiles
from acme_ca.ca.issuers import Issuer, IssuerSet
from acme_ca.ca.lint import CertificateLinter
from acme_ca.ca.profile import (
    IssuanceRequest,
    build_certificate,
    new_serial,
)
from acme_ca.ca.signer import SignerError
from acme_ca.ca.signing_checks import CaaRechecker, OrganizationCheck, SigningChecks, SigningGuard
from acme_ca.clock import Clock
from acme_ca.db.errors import database_unavailable
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.issuance_jobs import (
    IssuanceJob,
    IssuedCertificate,
    PrecertSignedJob,
    PreparedJob,
    SctsCollectedJob,
    Step,
)
from acme_ca.liveness import dead_on_this_host, holder_name, host_prefix

log = structlog.get_logger(component="acme_ca.ca.worker")

#: A job's lease (``issuance_lease_seconds``), renewed every third of it while the job runs.
DEFAULT_LEASE = timedelta(seconds=30)
#: After this many attempts a job is a permanent fault (unknown issuer, a TBS the HSM refuses):
#: the order fails with serverInternal instead of staying `processing` for ever.
MAX_ATTEMPTS = 10
#: Pause after a database error in the claim loop before trying again.
CLAIM_ERROR_BACKOFF = 2.0


def _pem(certs: Any) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


#: The vetted organization's subject attributes (C, ST, L, O) for an account, or None when the
#: account may not have an OV certificate now (not bound, organization revoked or stale).
OrganizationSubject = Callable[[int], Awaitable[x509.Name | None]]


#: A step's handler: the job as its step's view, its issuer; the job as the next step's view,
#: or None when the job stops here (done, failed, deferred, or taken over by another worker).
Handler = Callable[[Any, Issuer], Awaitable[IssuanceJob | None]]


class SigningWorker:
    """Claims issuance jobs and carries each through its steps (module docstring), one small
    handler per step, dispatched on the job's recorded ``step``.

    Just before the precertificate is signed the order is re-checked
    (:mod:`acme_ca.ca.recheck`): ``production`` (the default, fail closed) applies the BR
    corroboration rule in full; ``signing_guard(now)`` is asked first and any violation it
    returns refuses the signing; ``caa`` and ``account_uri`` recheck CAA older than 8 hours
    (without them such an order is refused); ``organizations`` answers the OV rule for the
    account of a job of an OV issuer (without it such a job is refused).
    ``on_issued(issuer, serial)`` is told of every precertificate recorded (it counts as
    issued: the status updater signs its OCSP responses)."""

    def __init__(
        self,
        jobs: IssuanceRepository,
        issuers: IssuerSet,
        linter: CertificateLinter,
        clock: Clock,
        *,
        ct: CertificateTransparency,
        profile_for: IssuanceProfiles,
        on_issued: Callable[[str, str], None] | None = None,
        poll_seconds: float = 5.0,
        lease: timedelta = DEFAULT_LEASE,
        worker_id: str | None = None,
        concurrency: int = 1,
        lint_final: bool = False,
        production: bool = True,
        signing_guard: SigningGuard | None = None,
        caa: CaaRechecker | None = None,
        account_uri: Callable[[int], str] | None = None,
        organizations: OrganizationCheck | None = None,
        hsm_deadline: timedelta = DEFAULT_HSM_DEADLINE,
        organization_subject: OrganizationSubject | None = None,
        internal_name_waiver: Callable[[str], bool] | None = None,
    ) -> None:
        self._jobs = jobs
        self._issuers = issuers
        self._clock = clock
        self._ct = ct
        self._profile_for = profile_for
        self._organization_subject = organization_subject
        self._on_issued = on_issued
        self._poll = poll_seconds
        self._lease = lease
        self.worker_id = worker_id or holder_name()
        self._wake = asyncio.Event()
        #: The next pass claims until the queue is empty (start, poll interval, a freed slot,
        #: a job handed back); otherwise a pass claims at most one job per NOTIFY pending.
        self._sweep = True
        self._concurrency = concurrency
        self._lint_final = lint_final
        self._lint = IssuanceLint(jobs, linter, clock, internal_name_waiver=internal_name_waiver)
        self._deferrals = Deferrals(jobs, clock, self.worker_id, ct=ct, hsm_deadline=hsm_deadline)
        self._checks = SigningChecks(
            jobs,
            clock,
            self.worker_id,
            production=production,
            signing_guard=signing_guard,
            caa=caa,
            account_uri=account_uri,
            ov_issuers=frozenset(i.name for i in issuers if i.purpose == "ov"),
            organizations=organizations,
            profile_reuse=profile_for.reuse_cap,
        )
        #: The dispatch table: each step's view and handler.
        self._steps: dict[Step, tuple[type[IssuanceJob], Handler]] = {
            Step.QUEUED: (IssuanceJob, self._prepare),
            Step.PREPARED: (PreparedJob, self._sign_precertificate),
            Step.PRECERT_SIGNED: (PrecertSignedJob, self._collect_scts),
            Step.SCTS_COLLECTED: (SctsCollectedJob, self._sign_certificate),
            Step.ISSUED: (IssuanceJob, self._finish_stored),
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set: keep up to ``concurrency`` jobs in flight, claiming
        more whenever one finishes, a NOTIFY arrives or the poll interval passes; at stop,
        let the jobs in flight finish (each is bounded by its HSM, CT and database
        timeouts).

        Each NOTIFY (one per job queued) is worth one claim: a pass woken only by
        notifications claims at most as many jobs as arrived, instead of claiming once more
        to find the queue empty (issue 20: an empty claim per issuance).  Anything else that
        may have left jobs waiting (start, the poll interval, a freed slot while full, a job
        handed back, a lost or restored listener, a failed claim) makes the next pass claim
        until the queue is empty, as every pass did before."""
        pending = 0  # NOTIFYs not yet matched by a claim

        def notified(*_: Any) -> None:
            nonlocal pending
            pending += 1
            self._wake.set()

        in_flight: set[asyncio.Task[None]] = set()

        full = False  # the last claims stopped at the limit, not at an empty queue

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            if full:
                self._sweep = True
                self._wake.set()  # a slot freed while jobs may be waiting: claim at once

        listener = await self._jobs.listen(notified)
        loop = asyncio.get_running_loop()
        next_takeover = loop.time()  # at start, then once per poll interval
        log.info(
            "worker.started",
            worker_id=self.worker_id,
            issuers=self._issuers.names(),
            concurrency=self._concurrency,
            lease_seconds=self._lease.total_seconds(),
        )
        try:
            while not stop.is_set():
                # Clear before claiming, not after: a NOTIFY that arrives while the last
                # (empty) claim is in flight must still cut the following wait short.
                self._wake.clear()
                sweep, self._sweep = self._sweep, False
                try:
                    if not self._jobs.listener_alive(listener):  # the database restarted
                        await self._jobs.release_listener(listener, notified)
                        listener = await self._jobs.listen(notified)
                        log.warning("worker.listener_restored")
                        sweep = True  # notifications may have been lost meanwhile
                    if loop.time() >= next_takeover:
                        # Once per poll interval, not on every NOTIFY: a dead predecessor's
                        # jobs resume within one interval, without a query per issuance.
                        if await self.take_over_dead_holders():
                            sweep = True
                        next_takeover = loop.time() + self._poll
                    full = False
                    while not stop.is_set():
                        if len(in_flight) >= self._concurrency:
                            full = True
                            break
                        if not sweep and pending <= 0:
                            break  # every job notified so far is claimed (or was taken)
                        known = pending
                        job = await self._claim()
                        if job is None:
                            # Those notified before the claim are settled (claimed by us or
                            # another worker); one arriving during it stays pending.
                            pending = max(0, pending - known)
                            break
                        pending = max(0, pending - 1)
                        task = asyncio.create_task(self._run_job(job), name=f"job-{job.id}")
                        in_flight.add(task)
                        task.add_done_callback(finished)
                except Exception as exc:
                    # The database went away between jobs (claim lives outside the job's
                    # guard): keep the worker alive and try again shortly.
                    log.warning("worker.claim_failed", error=repr(exc))
                    self._sweep = True
                    await asyncio.sleep(CLAIM_ERROR_BACKOFF)
                await self._wait(stop)
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            await self._jobs.release_listener(listener, notified)
            log.info("worker.stopped", worker_id=self.worker_id)

    async def _wait(self, stop: asyncio.Event) -> None:
        """Until a wake-up, ``stop``, or the poll interval (which makes the next pass claim
        until the queue is empty: jobs due by time, lost notifications)."""
        waiters = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
        done, _ = await asyncio.wait(
            waiters, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            self._sweep = True
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter

    async def take_over_dead_holders(self) -> list[int]:
        """End the leases of workers on this host whose process no longer exists (a killed
        or crashed predecessor): their jobs resume now, not when the lease lapses
        (:mod:`acme_ca.liveness`).  :meth:`run` asks at start and once per poll interval."""
        holders = await self._jobs.lease_holders(host_prefix(self.worker_id), now=self._clock.now())
        taken: list[int] = []
        for holder in dead_on_this_host(holders, self.worker_id):
            released = await self._jobs.release_leases(holder, now=self._clock.now())
            if released:
                log.warning("issuance.holder_dead", holder=holder, jobs=released)
                taken.extend(released)
        return taken

    async def _claim(self) -> IssuanceJob | None:
        return await self._jobs.claim(self.worker_id, now=self._clock.now(), lease=self._lease)

    async def run_once(self) -> bool:
        """Take one job and carry it as far as it goes; False when the queue is empty."""
        job = await self._claim()
        if job is None:
            return False
        await self._run_job(job)
        return True

    async def _run_job(self, job: IssuanceJob) -> None:
        """One claimed job, with its ids bound to every log event it causes."""
        structlog.contextvars.bind_contextvars(
            job_id=job.id, order_id=job.order_id, account_id=job.account_id
        )
        heartbeat = asyncio.create_task(self._heartbeat(job), name=f"lease-{job.id}")
        outage = False
        try:
            await self._process(job)
        except SignerError as exc:
            await self._deferrals.hsm_unavailable(job, exc)
        except Exception as exc:
            # Leave the job to a retry: a transient database fault must not lose the order.
            # Permanent faults surface in the logs each attempt.
            outage = database_unavailable(exc)
            if outage:
                log.warning("issuance.database_unavailable", step=job.step, error=repr(exc))
            else:
                log.exception("issuance.attempt_failed", attempts=job.attempts, step=job.step)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            if outage and await release_when_database_back(
                self._jobs, self._clock, self.worker_id, job, self._lease
            ):
                self._sweep = True
                self._wake.set()  # claim it again now, not at the next poll
            structlog.contextvars.unbind_contextvars("job_id", "order_id", "account_id")

    async def _heartbeat(self, job: IssuanceJob) -> None:
        """Renew the job's lease every third of it while the job is in flight (HSM and CT
        calls included), so no second worker takes a job that is only slow."""
        interval = self._lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                held = await self._jobs.renew_lease(
                    job.id, self.worker_id, now=self._clock.now(), lease=self._lease
                )
            except Exception as exc:  # the database away for a moment: try again
                log.warning("issuance.lease_renewal_failed", error=repr(exc))
                continue
            if not held:
                return  # done, deferred, failed, or taken over: the step code notices

    async def _process(self, job: IssuanceJob) -> None:
        """Run the job's step handlers, from its recorded step, until one stops it."""
        if job.faults > MAX_ATTEMPTS:
            await self._jobs.fail(
                job,
                problems.server_internal("issuance kept failing inside the CA"),
                {"reason": "too many attempts", "attempts": job.attempts, "step": job.step},
                self._clock.now(),
            )
            log.error("issuance.given_up", attempts=job.attempts, step=job.step)
            return
        issuer = self._issuers.by_name(job.issuer)
        if job.step is not Step.QUEUED:
            log.info(
                "issuance.resumed",
                step=job.step,
                attempts=job.attempts,
                serial=job.serial if isinstance(job, PreparedJob) else None,
            )
        current: IssuanceJob | None = job
        while current is not None:
            view, handler = self._steps[current.step]
            if type(current) is not view:
                raise IssuanceError(f"a {current.step} job read as {type(current).__name__}")
            step, started = current.step, time.perf_counter()
            try:
                current = await handler(current, issuer)
            except Exception:
                metrics.observe_issuance_step(step, "error", time.perf_counter() - started)
                raise
            # The last two steps end the job when they return nothing; the others stop it.
            finished = current is not None or step in (Step.SCTS_COLLECTED, Step.ISSUED)
            metrics.observe_issuance_step(
                step, "advanced" if finished else "stopped", time.perf_counter() - started
            )

    def _holds(self, job: IssuanceJob, step: str) -> bool:
        """Whether this worker still owns ``job`` as recorded; if not, another worker took it
        over after our lease lapsed and carries on from what is recorded."""
        if job.status == "running" and job.locked_by == self.worker_id:
            return True
        log.warning("issuance.lease_lost", step=step, status=job.status, locked_by=job.locked_by)
        return False

    # ------------------------------------------------------------------ the steps

    async def _prepare(self, job: IssuanceJob, issuer: Issuer) -> PreparedJob | None:
        """queued → prepared: serial, validity and the precertificate TBS, linted, recorded
        before anything is signed (waits in the queue while the CT logs cannot cover it)."""
        csr = x509.load_der_x509_csr(job.csr_der)
        if job.profile not in self._profile_for.profiles:
            # Removed from the configuration since finalize: nothing to issue under.
            await self._jobs.fail(
                job,
                problems.invalid_profile(
                    f"the order's profile {job.profile!r} is no longer configured; nothing was "
                    "signed. Create a new order"
                ),
                {"reason": "profile", "profile": job.profile},
                self._clock.now(),
            )
            log.error("issuance.refused", reason="profile", profile=job.profile)
            return None
        profile = self._profile_for.profile(job.profile)
        organization = None
        if profile.subject_organization:
            organization = await self._organization(job)
            if organization is None:
                return None
        prepared = build_certificate(
            issuer.certificate,
            issuer.signer.public_key,
            issuer.hash,
            self._profile_for.settings(issuer, profile),
            IssuanceRequest(
                names=job.names,
                public_key=csr.public_key(),  # type: ignore[arg-type]
                serial=new_serial(),
                signing_time=self._clock.now(),
                organization=organization,
            ),
            precertificate=True,
        )
        ct_policy = self._profile_for.ct_policy(profile)
        problem = self._ct.coverage_problem(prepared.not_before, prepared.not_after, ct_policy)
        if problem is not None:
            # Checked before anything is signed: without enough logs no precertificate.
            await self._deferrals.ct_unavailable(job, [problem], since=job.created_at)
            return None
        ok, findings = await self._lint.ok(
            job, prepared.lint_der, self._profile_for.lint_kinds(profile)[0], self._clock.now()
        )
        if not ok:
            return None
        recorded = await self._jobs.record_prepared(
            job,
            self.worker_id,
            serial=format(prepared.serial, "x"),
            not_before=prepared.not_before,
            not_after=prepared.not_after,
            precert_tbs_der=prepared.tbs_der,
            precert_lint_der=prepared.lint_der,
            now=self._clock.now(),
            lint_findings=findings,
            lint_kind=self._profile_for.lint_kinds(profile)[0],
        )
        if (
            not self._holds(recorded, "prepare")
            or not isinstance(recorded, PreparedJob)
            or recorded.precert_tbs_der != prepared.tbs_der
        ):
            return None
        log.info(
            "issuance.prepared",
            serial=recorded.serial,
            issuer=issuer.name,
            lint_findings=len(findings),
        )
        return recorded

    async def _sign_precertificate(
        self, job: PreparedJob, issuer: Issuer
    ) -> PrecertSignedJob | None:
        """prepared → precert_signed: re-check the order with the signing time, then have the
        signer sign exactly the recorded TBS and record the precertificate (issued from then
        on).  A prepared job resumed after a crash is re-checked the same way."""
        if not await self._checks.passes(job):
            return None
        signed = await sign_tbs_certificate(job.precert_tbs_der, issuer.signer, issuer.hash)
        if signed.tbs_certificate_bytes != job.precert_tbs_der:
            raise IssuanceError("the signed precertificate's TBS is not the recorded TBS")
        recorded = await self._jobs.record_precertificate(
            job, self.worker_id, signed.public_bytes(Encoding.DER), self._clock.now()
        )
        if not self._holds(recorded, "precertificate") or not isinstance(
            recorded, PrecertSignedJob
        ):
            return None
        log.info("precertificate.issued", serial=recorded.serial, issuer=issuer.name)
        if self._on_issued is not None:
            self._on_issued(issuer.name, recorded.serial)
        return recorded

    async def _collect_scts(self, job: PrecertSignedJob, issuer: Issuer) -> SctsCollectedJob | None:
        """precert_signed → scts_collected: SCTs from logs chosen by the policy, verified; the
        final TBS built from the precertificate's and checked against it; not enough SCTs
        sends the job back to the queue with backoff (until the CT deadline)."""
        precert = x509.load_der_x509_certificate(job.precert_der)
        profile = self._profile_for.profile(job.profile)
        try:
            scts = await self._ct.collect(
                precert,
                (issuer.certificate, *issuer.chain),
                precert_tbs=job.precert_tbs_der,
                issuer_spki_der=_spki(issuer.certificate),
                not_before=job.not_before,
                not_after=job.not_after,
                submitted_at=job.ct_submitted_at,
                policy=self._profile_for.ct_policy(profile),
            )
        except CtPolicyNotMet as e:
            await self._deferrals.ct_unavailable(job, e.reasons, since=job.ct_submitted_at)
            return None
        tbs = final_tbs(job.precert_tbs_der, [s.sct for s in scts])
        lint_der = throwaway_signed_tbs(tbs, issuer.signer, issuer.hash)
        # RFC 6962 §3.2 / BR 4.3.1.2: the final certificate minus its SCT list (cryptography)
        # is the signed precertificate minus its poison (our own DER code), byte for byte.
        if x509.load_der_x509_certificate(lint_der).tbs_precertificate_bytes != remove_poison(
            precert.tbs_certificate_bytes
        ):
            raise IssuanceError("the final TBS does not match the precertificate's TBS")
        findings: list[str] | None = None  # not linted: it matches the linted precertificate
        if self._lint_final:
            ok, findings = await self._lint.ok(
                job, lint_der, self._profile_for.lint_kinds(profile)[1], self._clock.now()
            )
            if not ok:
                return None
        recorded = await self._jobs.record_scts(
            job,
            self.worker_id,
            scts=[s.to_json() for s in scts],
            tbs_der=tbs,
            lint_der=lint_der,
            now=self._clock.now(),
        )
        if not self._holds(recorded, "scts") or not isinstance(recorded, SctsCollectedJob):
            return None
        log.info(
            "ct.scts_collected",
            serial=job.serial,
            scts=[s.summary() for s in scts],
            lint_findings=None if findings is None else len(findings),
        )
        return recorded

    async def _sign_certificate(self, job: SctsCollectedJob, issuer: Issuer) -> None:
        """scts_collected → issued: sign exactly the recorded final TBS, store the certificate
        and move the order to valid in one transaction, then send it to the logs."""
        precert = x509.load_der_x509_certificate(job.precert_der)
        cert = await sign_tbs_certificate(job.tbs_der, issuer.signer, issuer.hash)
        if cert.tbs_certificate_bytes != job.tbs_der:
            raise IssuanceError("the signed certificate's TBS is not the recorded TBS")
        if cert.tbs_precertificate_bytes != remove_poison(precert.tbs_certificate_bytes):
            raise IssuanceError("the certificate's precertificate TBS is not the precertificate's")
        log.info("issuance.signed", serial=job.serial, issuer=issuer.name)
        scts = [LoggedSct.from_json(s) for s in job.scts]
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
                    issuer.pem_chain(i).decode() for i in range(len(issuer.alternate_chains))
                ],
                scts=job.scts,
            ),
            self._clock.now(),
        )
        if stored:
            metrics.certificate_issued(issuer.name)
        log.info(
            "certificate.issued" if stored else "issuance.already_complete",
            serial=job.serial,
            issuer=issuer.name,
            names=list(job.names),
            not_after=job.not_after.isoformat(),
            scts=[s.summary() for s in scts],
        )
        # Same serial as the precertificate: its OCSP responses already answer for it.
        self._ct.submit_final_later(cert, (issuer.certificate, *issuer.chain), scts)

    async def _finish_stored(self, job: IssuanceJob, issuer: Issuer) -> None:
        """issued, yet claimable (its job row was left running): only the bookkeeping is left;
        nothing is signed again."""
        await self._jobs.mark_done(job, self._clock.now())
        log.info("issuance.already_complete")

    async def _organization(self, job: IssuanceJob) -> x509.Name | None:
        """The OV subject attributes of the job's account, from its vetted organization; None
        (and the order failed, nothing signed) when there is none to use now."""
        found = None
        if self._organization_subject is not None:
            found = await self._organization_subject(job.account_id)
        if found is not None:
            return found
        await self._jobs.fail(
            job,
            problems.unauthorized(
                "the account has no vetted organization usable for an OV certificate now "
                "(CP 3.2.2.1; BR 4.2.1); nothing was signed"
            ),
            {"reason": "organization", "profile": job.profile},
            self._clock.now(),
        )
        log.error("issuance.refused", reason="organization", profile=job.profile)
        return None
