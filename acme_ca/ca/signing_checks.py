"""The signing-time re-checks as the worker runs them, just before the HSM signs a precertificate.

:mod:`acme_ca.ca.recheck` holds the rules as pure functions; :class:`SigningChecks` feeds them
what the database recorded and the signing time, rechecks CAA older than 8 hours through the
validator (recording each recheck), and on a refusal fails the order with the rule's problem
and an audit row naming every rule that refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from acme_ca import metrics
from acme_ca.acme import problems
from acme_ca.acme.problems import Problem
from acme_ca.br import RULE_ORGANIZATION
from acme_ca.ca import recheck
from acme_ca.clock import Clock
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.db.issuance_jobs import AuthorizationEvidence, PreparedJob
from acme_ca.va.records import CheckResult

# The worker's events (issuance.refused, caa.rechecked...), under the worker's component.
log = structlog.get_logger(component="acme_ca.ca.worker")

#: Date-dependent production invariants evaluated at every signing (e.g. the BR 3.2.2.9
#: minimum of remote perspectives for that date): the violations, empty when signing may go on.
SigningGuard = Callable[[datetime], Sequence[str]]


class CaaRechecker(Protocol):
    """The validator's CAA recheck (corroborated when remote perspectives are configured)."""

    async def recheck_caa(
        self, identifier: str, wildcard: bool, account_uri: str, validation_method: str
    ) -> CheckResult: ...


async def _measured_recheck(
    caa: CaaRechecker, identifier: str, wildcard: bool, account_uri: str, method: str
) -> CheckResult:
    """One CAA recheck, recorded as ``validation_latency{operation="caa"}``."""
    started = time.perf_counter()
    result: CheckResult | None = None
    try:
        result = await caa.recheck_caa(identifier, wildcard, account_uri, method)
        return result
    finally:
        metrics.observe_validation("caa", "all", method, result, time.perf_counter() - started)


class OrganizationCheck(Protocol):
    """The OV rule (CP 3.2.2.1, BR 4.2.1) for an account at a date: why it may not have an OV
    certificate (None: it may).  The RA owns the rule (``ra.organizations.OrganizationPolicy``,
    which ``main/worker.py`` hands the worker); the CA only asks it again at signing time,
    so the CA never imports the RA."""

    async def check(self, account_id: int, at: datetime) -> Problem | None: ...


class SigningChecks:
    """Runs :mod:`acme_ca.ca.recheck` for one worker (see :class:`acme_ca.ca.worker.SigningWorker`
    for what ``production``, ``signing_guard``, ``caa`` and ``account_uri`` mean).

    ``ov_issuers`` names the issuers whose jobs need a usable organization
    (:func:`acme_ca.ca.recheck.organization_refusal`), asked of ``organizations``; without
    ``organizations`` every such job is refused (fail closed)."""

    def __init__(
        self,
        jobs: IssuanceRepository,
        clock: Clock,
        worker_id: str,
        *,
        production: bool,
        signing_guard: SigningGuard | None,
        caa: CaaRechecker | None,
        account_uri: Callable[[int], str] | None,
        ov_issuers: frozenset[str] = frozenset(),
        organizations: OrganizationCheck | None = None,
        profile_reuse: Callable[[str], timedelta | None] | None = None,
    ) -> None:
        self._jobs = jobs
        self._profile_reuse = profile_reuse
        self._ov_issuers = ov_issuers
        self._organizations = organizations
        self._clock = clock
        self.worker_id = worker_id
        self._production = production
        self._signing_guard = signing_guard
        self._caa = caa
        self._account_uri = account_uri

    async def passes(self, job: PreparedJob) -> bool:
        """Just before the HSM signs (:mod:`acme_ca.ca.recheck`): the production guard, the
        CSR's key not blocked (BR 6.1.1.3(4)), the date rules (authorizations, BR 4.2.1 reuse,
        BR 6.3.2 validity, BR 3.2.2.9 corroboration), then CAA older than 8 hours checked
        again (BR 3.2.2.8).  A refusal fails the order with its problem and an audit row;
        returns whether signing may go on.
        """
        evidence = await self._date_rules_hold(job)
        if evidence is None:
            return False
        rechecked = await self._recheck_stale_caa(job, evidence)
        if rechecked is None:
            return False
        # A recheck takes network time: the date rules once more at the time now reached.
        return not rechecked or await self._date_rules_hold(job) is not None

    async def _date_rules_hold(self, job: PreparedJob) -> list[AuthorizationEvidence] | None:
        """The order's authorizations as the date rules read them, or None when a rule
        refused (the order has failed)."""
        now = self._clock.now()
        if self._signing_guard is not None:
            violations = list(self._signing_guard(now))
            if violations:
                await self._refuse(job, [recheck.guard_refusal(violations)], now)
                return None
        key_id = recheck.csr_key_id(job.csr_der)
        # One round trip for the blocked key and the authorizations (issue 20); the rules
        # below are applied in the same order as when each was read on its own.
        blocked, evidence = await self._jobs.signing_evidence(job.order_id, key_id)
        if blocked:
            await self._refuse(job, [recheck.blocked_key_refusal(key_id)], now)
            return None
        if job.issuer in self._ov_issuers:
            check = self._organizations
            refusal = recheck.organization_refusal(
                problems.unauthorized(f"{RULE_ORGANIZATION}: this worker has no OV rule")
                if check is None
                else await check.check(job.account_id, now)
            )
            if refusal is not None:
                await self._refuse(job, [refusal], now)
                return None
        purpose = recheck.issuer_purpose_refusal(
            job.issuer, job.issuer in self._ov_issuers, job.precert_lint_der
        )
        if purpose is not None:
            await self._refuse(job, [purpose], now)
            return None
        found = recheck.refusals(
            job.names,
            evidence,
            not_before=job.not_before,
            not_after=job.not_after,
            now=now,
            production=self._production,
            profile_cap=None if self._profile_reuse is None else self._profile_reuse(job.profile),
        )
        if found:
            await self._refuse(job, found, now)
            return None
        return evidence

    async def _recheck_stale_caa(
        self, job: PreparedJob, evidence: Sequence[AuthorizationEvidence]
    ) -> bool | None:
        """Recheck CAA, concurrently, for each name whose check is older than 8 hours (so a
        100-name order stays well within the job's lease); whether any was rechecked, or None
        when one refused (the order has failed).  ``evidence``: the authorizations as the
        date rules just read them (issue 20: one read fewer per certificate)."""
        now = self._clock.now()
        stale: list[tuple[str, AuthorizationEvidence, str]] = []
        for name, ev in recheck.authorizations_by_name(job.names, evidence).items():
            gone = recheck.authorization_refusal(name, ev, now)
            if gone is not None:  # lapsed since the date rules looked at the same rows
                await self._refuse(job, [gone], now)
                return None
            assert ev is not None and ev.method is not None
            if recheck.caa_stale(ev, now):
                stale.append((name, ev, ev.method))
        if not stale:
            return False
        caa, account_uri = self._caa, self._account_uri
        if caa is None or account_uri is None:
            await self._refuse(
                job,
                [
                    recheck.caa_refusal(name, None, recheck.caa_checked_at(ev))
                    for name, ev, _ in stale
                ],
                now,
            )
            return None
        started = self._clock.now()
        async with asyncio.TaskGroup() as group:
            checks = [
                group.create_task(
                    _measured_recheck(
                        caa, ev.identifier, ev.wildcard, account_uri(job.account_id), method
                    )
                )
                for _, ev, method in stale
            ]
        refusals: list[recheck.Refusal] = []
        for (name, ev, _), check in zip(stale, checks, strict=True):
            result = check.result()
            await self._jobs.record_caa_recheck(
                job,
                self.worker_id,
                authz_id=ev.authz_id,
                identifier=name,
                checked_at=started,
                ok=result.ok,
                records=[r.to_json() for r in result.records],
                problem=result.problem,
                now=self._clock.now(),
            )
            previous = recheck.caa_checked_at(ev)
            log.info(
                "caa.rechecked",
                identifier=name,
                ok=result.ok,
                previous=None if previous is None else previous.isoformat(),
            )
            if not result.ok:
                assert result.problem is not None
                refusals.append(recheck.caa_refusal(name, result.problem, previous))
        if refusals:
            await self._refuse(job, refusals, self._clock.now())
            return None
        return True

    async def _refuse(self, job: PreparedJob, found: list[recheck.Refusal], now: datetime) -> None:
        """Fail the order: nothing is signed for it (a recorded, unsigned serial stays
        unsigned); the audit row names every rule that refused."""
        if not await self._jobs.fail(
            job,
            recheck.problem_for(found),
            {
                "reason": "re-check before signing",
                "serial": job.serial,
                "refusals": [r.audit() for r in found],
            },
            now,
            held_by=self.worker_id,
        ):
            # Another worker took the job over after our lease lapsed: it re-checks itself.
            log.warning("issuance.lease_lost", step="re-check", serial=job.serial)
            return
        log.error("issuance.refused", serial=job.serial, refusals=[r.audit() for r in found])
