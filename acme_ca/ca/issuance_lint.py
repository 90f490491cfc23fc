"""Pre-issuance linting as the signing worker applies it (BR 4.3.1.2).

pkilint itself runs in :mod:`acme_ca.ca.lint`; this module holds what the worker does with a
report: an ERROR or FATAL finding fails the order (nothing more is signed), except test
mode's one waiver, the internal-name finding for a job with special-use names, which is
logged each time.  Kept apart from :mod:`acme_ca.ca.issuance_steps` so the steps' module
holds the step handlers only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import structlog

from acme_ca.acme import problems
from acme_ca.ca.lint import CertificateLinter, LintFinding, LintKind
from acme_ca.clock import Clock
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.issuance_jobs import IssuanceJob, PrecertSignedJob

log = structlog.get_logger(component="acme_ca.ca.worker")

#: pkilint's finding for a SAN under a reserved or special-use domain (BR 7.1.2.7.12).
INTERNAL_NAME_FINDING = "cabf.internal_domain_name"


class IssuanceLint:
    """Lints a job's throwaway-signed copy and fails the job's order on a blocking finding.

    ``internal_name_waiver`` is test mode's special-use name test
    (``IdentifierPolicy.is_special_use``): for a job with such a name, the internal-name
    finding, and only it, is waived and logged."""

    def __init__(
        self,
        jobs: IssuanceRepository,
        linter: CertificateLinter,
        clock: Clock,
        *,
        internal_name_waiver: Callable[[str], bool] | None = None,
    ) -> None:
        self._jobs = jobs
        self._linter = linter
        self._clock = clock
        self._internal_name_waiver = internal_name_waiver

    async def ok(
        self, job: IssuanceJob, der: bytes, kind: LintKind, signing_time: datetime
    ) -> tuple[bool, list[str]]:
        """Lint ``der``; on an ERROR or FATAL finding fail the order (nothing more is signed)
        and return False.  Also returns the findings, one line each."""
        report = await self._linter.alint(der, kind, signing_time)
        blocking = self._unwaived(job, report.blocking, kind)
        if not blocking:
            return True, [str(f) for f in report.findings]
        findings = [str(f) for f in blocking]
        log.error("issuance.lint_failed", kind=kind, findings=findings, step=job.step)
        what = "precertificate" if kind.endswith("-PRE-CERTIFICATE") else "certificate"
        signed = " beyond the precertificate" if isinstance(job, PrecertSignedJob) else ""
        await self._jobs.fail(
            job,
            problems.server_internal(
                f"the {what} failed pre-issuance linting; nothing{signed} was signed"
            ),
            {"reason": "pre-issuance lint", "kind": kind, "findings": findings},
            self._clock.now(),
        )
        return False, [str(f) for f in report.findings]

    def _unwaived(
        self, job: IssuanceJob, blocking: tuple[LintFinding, ...], kind: LintKind
    ) -> tuple[LintFinding, ...]:
        """The blocking findings left after test mode's one waiver: the internal-name finding
        for a job with special-use names (.test, localhost, ...), each waiver logged."""
        waiver = self._internal_name_waiver
        special = [name for name in job.names if waiver is not None and waiver(name)]
        if not special:
            return blocking
        kept = []
        for finding in blocking:
            if finding.code != INTERNAL_NAME_FINDING:
                kept.append(finding)
                continue
            log.warning(
                "issuance.lint_waived",
                kind=kind,
                finding=str(finding),
                names=special,
                reason="test mode: special-use name",
            )
        return tuple(kept)
