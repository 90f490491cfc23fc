"""What each validation attempt asked, of whom, and what came back (Boulder's ValidationRecord).

Every check in ``va/`` returns a :class:`CheckResult` built from these records.  The records go
to the audit log (BR-DCV-1 wants the method recorded for every validation) and ``observed``
is the one value a remote perspective must reproduce for corroboration (BR §3.2.2.9), so both
are plain frozen data that serialise to JSON without knowing who will read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from acme_ca.acme.problems import Problem
from acme_ca.va.resolver import DnsAnswer, DnssecStatus

Method = Literal["http-01", "dns-01", "caa"]

PRIMARY_PERSPECTIVE: Final = "primary"
"""The CA's own network location; remote perspectives use their own names (BR §3.2.2.9)."""

RESPONSE_RECORD_LIMIT: Final = 256
"""Characters of a response kept in a record: enough to see what was served, no more."""


def truncate(text: str, limit: int = RESPONSE_RECORD_LIMIT) -> str:
    """Shorten ``text`` for a record, marking the cut so a reader knows there was more."""
    if len(text) <= limit:
        return text
    return text[:limit] + "...[truncated]"


@dataclass(frozen=True, kw_only=True)
class ValidationRecord:
    """One question put to the network during a check: a DNS lookup or one HTTP hop.

    ``query`` is the URL fetched or the DNS question (``name TYPE``); ``server`` is the
    resolver asked or the ``address:port`` connected to; ``addresses`` are the addresses the
    hostname resolved to; ``response`` is what came back, truncated; ``authenticated`` is the
    resolver's AD bit where a DNS answer was involved, and ``dnssec`` what we made of it:
    ``secure`` (AD), ``insecure`` (no AD, from a resolver proven to validate on the name's
    path, so the zone is DNSSEC-insecure, not bogus) or ``unchecked`` (DNSSEC not required,
    test mode); None for a failed lookup or a record without a DNS answer.
    """

    method: Method
    hostname: str
    query: str
    at: datetime
    perspective: str = PRIMARY_PERSPECTIVE
    server: str | None = None
    addresses: tuple[str, ...] = ()
    response: str | None = None
    error: str | None = None
    authenticated: bool | None = None
    dnssec: DnssecStatus | None = None

    def to_json(self) -> dict[str, Any]:
        """The audit form: every field, time as RFC 3339, empty optionals left out."""
        body: dict[str, Any] = {
            "method": self.method,
            "perspective": self.perspective,
            "hostname": self.hostname,
            "query": self.query,
            "at": self.at.isoformat(),
        }
        if self.server is not None:
            body["server"] = self.server
        if self.addresses:
            body["addresses"] = list(self.addresses)
        if self.response is not None:
            body["response"] = self.response
        if self.error is not None:
            body["error"] = self.error
        if self.authenticated is not None:
            body["authenticated"] = self.authenticated
        if self.dnssec is not None:
            body["dnssec"] = self.dnssec
        return body


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``ok`` exactly when there is no ``problem``.

    ``observed`` is the comparable value (the key authorization served, the TXT values seen,
    the CAA verdict) that corroborating perspectives compare with the primary's.
    """

    ok: bool
    problem: Problem | None
    records: tuple[ValidationRecord, ...] = ()
    observed: str | None = None

    def __post_init__(self) -> None:
        if self.ok != (self.problem is None):
            raise ValueError("a CheckResult is ok exactly when it carries no problem")

    @classmethod
    def success(
        cls, records: tuple[ValidationRecord, ...], observed: str | None = None
    ) -> CheckResult:
        return cls(ok=True, problem=None, records=records, observed=observed)

    @classmethod
    def failure(
        cls,
        problem: Problem,
        records: tuple[ValidationRecord, ...],
        observed: str | None = None,
    ) -> CheckResult:
        return cls(ok=False, problem=problem, records=records, observed=observed)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": self.ok,
            "records": [r.to_json() for r in self.records],
        }
        if self.problem is not None:
            body["problem"] = self.problem.to_json()
        if self.observed is not None:
            body["observed"] = self.observed
        return body


def dns_record(
    answer: DnsAnswer,
    *,
    method: Method,
    hostname: str,
    at: datetime,
    perspective: str = PRIMARY_PERSPECTIVE,
) -> ValidationRecord:
    """One DNS lookup as a record: question, resolver, rcode and data, DNSSEC verdict."""
    return ValidationRecord(
        method=method,
        hostname=hostname,
        query=answer.question,
        at=at,
        perspective=perspective,
        server=answer.server,
        response=truncate(answer.describe()),
        error=f"{answer.failure}: {answer.error}" if answer.failure is not None else None,
        authenticated=answer.authenticated,
        dnssec=answer.dnssec,
    )
