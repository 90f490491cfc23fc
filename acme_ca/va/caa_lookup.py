"""CAA through the VA's resolver: the DNS adapter for :mod:`acme_ca.va.caa` and its check.

``caa.py`` stays pure and takes a lookup function; this module supplies the real one and
turns a :class:`CaaDecision` into a :class:`CheckResult`, so CAA is recorded and corroborated
(BR §3.2.2.8, §3.2.2.9) the same way as the validation methods.  Any failed lookup -- SERVFAIL,
timeout, an answer DNSSEC did not authenticate -- is a refusal (CAA-10, CAA-11).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

import structlog

from acme_ca.acme import problems
from acme_ca.clock import Clock, SystemClock
from acme_ca.va.caa import (
    DEFAULT_ISSUER_DOMAINS,
    CaaDecision,
    CaaLookup,
    CaaLookupResult,
    CaaRecord,
    LookupFailure,
    check_caa,
)
from acme_ca.va.records import (
    CAA_METHOD,
    PRIMARY_PERSPECTIVE,
    CheckResult,
    ValidationRecord,
    truncate,
)
from acme_ca.va.resolver import DnsAnswer, DnsClient, DnsFailure

OBSERVED_ALLOWED: Final = "allowed"
OBSERVED_DENIED: Final = "denied"
"""``observed`` values: perspectives must agree on permission, not on bytes (CAA-15)."""

_FAILURES: Final = {
    DnsFailure.SERVFAIL: LookupFailure.SERVFAIL,
    DnsFailure.TIMEOUT: LookupFailure.TIMEOUT,
    DnsFailure.UNAUTHENTICATED: LookupFailure.BOGUS,
    # caa.py has no generic failure; a refused or malformed reply is treated as SERVFAIL.
    DnsFailure.ERROR: LookupFailure.SERVFAIL,
}

_log = structlog.get_logger(component=__name__)


def caa_result(answer: DnsAnswer) -> CaaLookupResult:
    """One CAA answer as ``caa.py`` wants it: empty on NXDOMAIN/NODATA, failure otherwise."""
    if answer.failure is not None:
        return CaaLookupResult(
            query_name=answer.name,
            failure=_FAILURES[answer.failure],
            authenticated=answer.authenticated,
        )
    records = tuple(
        CaaRecord(
            flags=rdata.flags,  # type: ignore[attr-defined]
            tag=rdata.tag.decode("ascii", "replace"),  # type: ignore[attr-defined]
            value=rdata.value.decode("utf-8", "replace"),  # type: ignore[attr-defined]
        )
        for rdata in answer.records
    )
    return CaaLookupResult(
        query_name=answer.name, records=records, authenticated=answer.authenticated
    )


def make_caa_lookup(dns: DnsClient) -> CaaLookup:
    """The production :data:`CaaLookup`: one CAA query, CNAMEs followed by the client."""

    async def lookup(name: str) -> CaaLookupResult:
        return caa_result(await dns.query(name, "CAA"))

    return lookup


def _describe(result: CaaLookupResult) -> str:
    if result.failure is not None:
        return f"failed: {result.failure}"
    if not result.records:
        return "no CAA records"
    return "; ".join(f'{r.flags} {r.tag} "{r.value}"' for r in result.records)


class CaaChecker:
    """Runs :func:`check_caa` for this CA's issuer domains and records every lookup.

    ``resolver`` names who answered, for the records (the lookup function does not say).
    """

    def __init__(
        self,
        lookup: CaaLookup,
        issuer_domains: Sequence[str] = DEFAULT_ISSUER_DOMAINS,
        *,
        resolver: str | None = None,
        perspective: str = PRIMARY_PERSPECTIVE,
        clock: Clock | None = None,
    ) -> None:
        self._lookup = lookup
        self._issuer_domains = tuple(issuer_domains)
        self._resolver = resolver
        self._perspective = perspective
        self._clock: Clock = clock or SystemClock()

    @classmethod
    def from_dns(
        cls,
        dns: DnsClient,
        issuer_domains: Sequence[str] = DEFAULT_ISSUER_DOMAINS,
        *,
        perspective: str = PRIMARY_PERSPECTIVE,
        clock: Clock | None = None,
    ) -> CaaChecker:
        """The usual wiring: lookups through ``dns``, records naming its resolvers."""
        return cls(
            make_caa_lookup(dns),
            issuer_domains,
            resolver=dns.describe(),
            perspective=perspective,
            clock=clock,
        )

    async def check(
        self,
        identifier: str,
        *,
        wildcard: bool,
        account_uri: str,
        validation_method: str,
    ) -> CheckResult:
        """Allowed → ok; denied or any failed lookup → ``caa`` (403) with the decision's reason."""
        at = self._clock.now()
        decision = await check_caa(
            identifier,
            wildcard=wildcard,
            issuer_domains=self._issuer_domains,
            account_uri=account_uri,
            validation_method=validation_method,
            lookup=self._lookup,
        )
        records = self._records(identifier, decision, at)
        if decision.allowed:
            _log.debug("va.caa.allowed", reason=decision.reason, name=decision.relevant_name)
            return CheckResult.success(records, OBSERVED_ALLOWED)
        # BR §3.2.2.8: issuance blocked by CAA is logged.
        _log.warning(
            "va.caa.denied",
            identifier=identifier,
            wildcard=wildcard,
            account_uri=account_uri,
            validation_method=validation_method,
            reason=decision.reason,
            relevant_name=decision.relevant_name,
            records=[f"{r.flags} {r.tag} {r.value}" for r in decision.records],
        )
        return CheckResult.failure(problems.caa(decision.detail), records, OBSERVED_DENIED)

    def _records(
        self, identifier: str, decision: CaaDecision, at: datetime
    ) -> tuple[ValidationRecord, ...]:
        """One record per name climbed, all stamped with the check's start time."""
        hostname = identifier.removeprefix("*.").rstrip(".").lower()
        return tuple(
            ValidationRecord(
                method=CAA_METHOD,
                hostname=hostname,
                query=f"{result.query_name} CAA",
                at=at,
                perspective=self._perspective,
                server=self._resolver,
                response=truncate(_describe(result)),
                error=(
                    f"{result.failure}: {decision.reason}" if result.failure is not None else None
                ),
                authenticated=result.authenticated,
            )
            for result in decision.lookups
        )
