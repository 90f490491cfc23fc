"""The issuance steps: one claimed job carried from its recorded step to where it stops.

Certificate Transparency is always on (CP 4.3.1: CT before issuance; RFC 6962 §3.1; BR
7.1.2.9).  Each job records the step it has reached (``issuance_jobs.step``,
:class:`acme_ca.db.issuance.Step`) and :meth:`IssuanceSteps.process` dispatches on it to one
small handler per step, each taking the typed view of its step and returning the next one:

``queued`` → :meth:`IssuanceSteps._prepare` → ``prepared``
    choose serial and validity; check that the usable CT logs covering notAfter can meet the
    CT policy (otherwise nothing is signed and the job waits, see below); build the
    precertificate TBS (the final TBS plus the critical poison, last), sign a copy with a
    throwaway key and lint it as ``DV-PRE-CERTIFICATE`` (BR 4.3.1.2: an ERROR or FATAL
    finding fails the order with ``serverInternal``); record serial, validity, TBS and the
    linted copy before the HSM signs anything, so whatever it signs can be found and revoked.
``prepared`` → :meth:`IssuanceSteps._sign_precertificate` → ``precert_signed``
    re-check the order with the signing time (:mod:`acme_ca.ca.recheck`: ``signing_guard``,
    the CSR's key not blocked (BR 6.1.1.3(4)), authorizations, BR 4.2.1 reuse, BR 6.3.2
    validity, BR 3.2.2.9 corroboration, CAA older than 8 hours checked again; a refusal fails
    the order and nothing is signed; a prepared job resumed after a crash is re-checked
    again); have the signer sign exactly the recorded TBS and record the precertificate: from
    this commit on it counts as issued (``precertificates``; ``on_issued`` tells the status
    updater, which signs its OCSP responses, when this pass of the job ends).
``precert_signed`` → :meth:`IssuanceSteps._collect_scts` → ``scts_collected``
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
``scts_collected`` → :meth:`IssuanceSteps._sign_certificate` → ``issued``
    have the signer sign exactly that TBS; store the certificate (with its SCTs) and mark the
    order valid, in one transaction; then send the certificate to the logs (best effort).

Each step is recorded only from the step before, by the worker holding the job's lease, and
returns the row as recorded: a worker that lost its lease stops (:meth:`IssuanceSteps._holds`)
and the next one resumes at the recorded step.  Claiming jobs and holding their leases is
:mod:`acme_ca.ca.worker`'s job; this module only carries one job.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from acme_ca import metrics
from acme_ca.acme import problems
from acme_ca.ca.ct.sct import final_tbs, remove_poison
from acme_ca.ca.ct.submit import CertificateTransparency, CtPolicyNotMet, LoggedSct
from acme_ca.ca.deferrals import Deferrals
from acme_ca.ca.der import sign_tbs_certificate, throwaway_signed_tbs
from acme_ca.ca.issuance_lint import IssuanceLint
from acme_ca.ca.issuance_profiles import IssuanceError, IssuanceProfiles
from acme_ca.ca.issuers import Issuer, IssuerSet
from acme_ca.ca.profile import (
    IssuanceRequest,
    build_certificate,
    new_serial,
)
from acme_ca.ca.signing_checks import SigningChecks
from acme_ca.clock import Clock
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.issuance_jobs import (
    IssuanceJob,
    IssuedCertificate,
    PrecertSignedJob,
    PreparedJob,
    SctsCollectedJob,
    Step,
)

log = structlog.get_logger(component="acme_ca.ca.worker")

#: After this many attempts a job is a permanent fault (unknown issuer, a TBS the HSM refuses):
#: the order fails with serverInternal instead of staying `processing` for ever.
MAX_ATTEMPTS = 10


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


class IssuanceSteps:
    """Carries one claimed job through its steps (module docstring) for the worker
    ``worker_id``, one small handler per step, dispatched on the job's recorded ``step``.

    ``checks`` re-checks the order just before the precertificate is signed; ``lint`` and
    ``deferrals`` are the worker's (:class:`acme_ca.ca.worker.SigningWorker` builds them);
    ``on_issued(issuer, serial)`` is told of every precertificate recorded, when the pass
    that recorded it ends."""

    def __init__(
        self,
        jobs: IssuanceRepository,
        issuers: IssuerSet,
        clock: Clock,
        worker_id: str,
        *,
        ct: CertificateTransparency,
        profile_for: IssuanceProfiles,
        lint: IssuanceLint,
        checks: SigningChecks,
        deferrals: Deferrals,
        on_issued: Callable[[str, str], None] | None = None,
        lint_final: bool = False,
        organization_subject: OrganizationSubject | None = None,
    ) -> None:
        self._jobs = jobs
        self._issuers = issuers
        self._clock = clock
        self.worker_id = worker_id
        self._ct = ct
        self._profile_for = profile_for
        self._lint = lint
        self._checks = checks
        self._deferrals = deferrals
        self._on_issued = on_issued
        self._lint_final = lint_final
        self._organization_subject = organization_subject
        #: The dispatch table: each step's view and handler.
        self._steps: dict[Step, tuple[type[IssuanceJob], Handler]] = {
            Step.QUEUED: (IssuanceJob, self._prepare),
            Step.PREPARED: (PreparedJob, self._sign_precertificate),
            Step.PRECERT_SIGNED: (PrecertSignedJob, self._collect_scts),
            Step.SCTS_COLLECTED: (SctsCollectedJob, self._sign_certificate),
            Step.ISSUED: (IssuanceJob, self._finish_stored),
        }

    async def process(self, job: IssuanceJob) -> None:
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
        issued: str | None = None  # the serial of a precertificate recorded in this pass
        try:
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
                if step is Step.PREPARED and isinstance(current, PrecertSignedJob):
                    issued = current.serial
                # The last two steps end the job when they return nothing; the others stop it.
                finished = current is not None or step in (Step.SCTS_COLLECTED, Step.ISSUED)
                metrics.observe_issuance_step(
                    step, "advanced" if finished else "stopped", time.perf_counter() - started
                )
        finally:
            # The status updater signs the precertificate's OCSP responses once this pass
            # ends (issued, deferred for CT, or failed), not while its SCTs and final
            # signature wait: on the worker's one event loop they would hold up the answer
            # to finalize.  A pass ends within ct_timeout_seconds of the precertificate,
            # far inside BR-OCSP-2's 15 minutes.
            if issued is not None and self._on_issued is not None:
                self._on_issued(issuer.name, issued)

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
        return recorded  # process() tells on_issued once this pass ends

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
