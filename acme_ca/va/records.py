"""What each validation attempt asked, of whom, and what came back (Boulder's ValidationRecord).

Every check in ``va/`` returns a :class:`CheckResult` built from these records.  The records go
to the audit log and ``observed`` is the one value a remote perspective must reproduce for
corroboration (BR §3.2.2.9), so both are plain frozen data that serialise to JSON without
knowing who will read them.

BR 5.4.1 (ballot SC-099, from 2026-07-15) wants every verification record to name what was
validated (the applied-for FQDN), the Authorization Domain Name and the method (BR section or
ACME label); BR 5.4.1 items 7-8 (MPIC) want each perspective's id, the attempted name, its
result and the quorum.  A method's records therefore each carry ``identifier``, ``adn``,
``method`` + ``br_method`` and the ``value`` looked for, and the record that decided the
check carries its ``result`` (:func:`dcv_records`).  Every new field is optional in JSON, so
records written before them, or by a remote VA of an older version, still read.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Literal, Protocol

from acme_ca.acme.jsontypes import JsonValue
from acme_ca.acme.problems import Problem
from acme_ca.clock import Clock, SystemClock
from acme_ca.va.methods import DcvMethod
from acme_ca.va.resolver import DnsAnswer, DnsClient, DnssecStatus

Method = str
"""A record's method: an ACME validation method label of :mod:`acme_ca.va.registry`, or
``caa``.  Only the shape is checked when a record is read back (:data:`_METHOD_RE`): a
remote's records are kept for the audit, its ``ok`` and ``observed`` decide."""
CAA_METHOD: Final = "caa"
Result = Literal["pass", "fail"]
RESULTS: Final = ("pass", "fail")
_METHOD_RE: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*", re.ASCII)


class FormatError(ValueError):
    """JSON that is not a record, result or problem as ``to_json`` writes them."""


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
    rir: str | None = None
    """Remote perspectives (BR 3.2.2.9): the RIR region the perspective is in."""
    corroborated: bool | None = None
    """A remote perspective's summary record: whether it corroborated the primary."""
    quorum: str | None = None
    """The primary's corroboration summary: corroborating remotes / remotes asked, ``4/5``."""
    identifier: str | None = None
    """What was validated (SC-099): the applied-for name, ``*.example.com`` for a wildcard."""
    adn: str | None = None
    """The Authorization Domain Name the method proved control of (BR 3.2.2.4, SC-101)."""
    br_method: str | None = None
    """The BR section of the method, ``3.2.2.4.19``; ``method`` is its ACME label."""
    value: str | None = None
    """The value the method looks for: the key authorization (http-01), the TXT digest
    (dns-01, dns-account-01) or the record for this CA and account (dns-persist-01).  With
    ``result: pass`` it is the value that proved control."""
    result: Result | None = None
    """On the record that decided a check, and on each perspective's summary: pass or fail."""

    def to_json(self) -> dict[str, JsonValue]:
        """The audit form: every field, time as RFC 3339, empty optionals left out."""
        body: dict[str, JsonValue] = {
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
        if self.rir is not None:
            body["rir"] = self.rir
        if self.corroborated is not None:
            body["corroborated"] = self.corroborated
        if self.quorum is not None:
            body["quorum"] = self.quorum
        if self.identifier is not None:
            body["identifier"] = self.identifier
        if self.adn is not None:
            body["adn"] = self.adn
        if self.br_method is not None:
            body["brMethod"] = self.br_method
        if self.value is not None:
            body["value"] = self.value
        if self.result is not None:
            body["result"] = self.result
        return body

    @classmethod
    def from_json(cls, body: Any) -> ValidationRecord:
        """Read :meth:`to_json`'s form back (a remote perspective's reply); ValueError if the
        shape is wrong."""
        if not isinstance(body, dict):
            raise FormatError("a validation record must be an object")
        method = body.get("method")
        if not isinstance(method, str) or _METHOD_RE.fullmatch(method) is None:
            raise FormatError(f"unknown record method {method!r}")
        at = datetime.fromisoformat(_text(body, "at"))
        if at.tzinfo is None:
            raise FormatError("record time has no time zone")
        addresses = body.get("addresses", [])
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise FormatError("addresses must be a list of strings")
        dnssec = body.get("dnssec")
        if dnssec not in (None, "secure", "insecure", "unchecked"):
            raise FormatError(f"unknown dnssec status {dnssec!r}")
        result = body.get("result")
        if result not in (None, *RESULTS):
            raise FormatError(f"unknown result {result!r}")
        return cls(
            method=method,
            hostname=_text(body, "hostname"),
            query=_text(body, "query"),
            at=at,
            perspective=_text(body, "perspective"),
            server=_optional_text(body, "server"),
            addresses=tuple(addresses),
            response=_optional_text(body, "response"),
            error=_optional_text(body, "error"),
            authenticated=_optional_bool(body, "authenticated"),
            dnssec=dnssec,
            rir=_optional_text(body, "rir"),
            corroborated=_optional_bool(body, "corroborated"),
            quorum=_optional_text(body, "quorum"),
            identifier=_optional_text(body, "identifier"),
            adn=_optional_text(body, "adn"),
            br_method=_optional_text(body, "brMethod"),
            value=_optional_text(body, "value"),
            result=result,
        )


def _text(body: Mapping[str, object], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise FormatError(f"{key} must be a string")
    return value


def _optional_text(body: Mapping[str, object], key: str) -> str | None:
    return None if body.get(key) is None else _text(body, key)


def _optional_bool(body: Mapping[str, object], key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise FormatError(f"{key} must be a boolean")
    return value


def problem_from_json(body: Any) -> Problem:
    """A problem document as :meth:`Problem.to_json` wrote it (type, detail, status only)."""
    if not isinstance(body, dict):
        raise FormatError("a problem must be an object")
    status = body.get("status")
    if isinstance(status, bool) or not isinstance(status, int):
        raise FormatError("problem status must be an integer")
    return Problem(type=_text(body, "type"), detail=_text(body, "detail"), status=status)


@dataclass(frozen=True)
class ChallengeRequest:
    """One challenge to validate, the one message from the RA through the VA (and the MPIC
    layer) down to the method's check, at the primary and at each remote perspective alike
    (so a remote can repeat the full check): the challenge type (a method label of
    :mod:`acme_ca.va.registry`), the authorization's name without ``*.``, its wildcard flag,
    the challenge token, the key authorization (RFC 8555 §8.1) and the account URI
    (dns-persist-01 and dns-account-01 bind to it)."""

    challenge_type: str
    identifier: str
    wildcard: bool
    token: str
    key_authorization: str
    account_uri: str


class CaaRechecker(Protocol):
    """The VA's CAA recheck before issuance, when the validation's CAA check is older than
    BR 3.2.2.8 allows (corroborated when remote perspectives are configured)."""

    async def recheck_caa(
        self, identifier: str, wildcard: bool, account_uri: str, validation_method: str
    ) -> CheckResult: ...


@dataclass(eq=False, kw_only=True)
class PerspectiveCheck:
    """What every method's check is built with, for one perspective: its resolver client,
    its name (on every record it writes, BR 5.4.1 item 7) and the clock the records are
    timed by.  The methods add their own options as further keyword fields."""

    dns: DnsClient = field(kw_only=False)
    perspective: str = PRIMARY_PERSPECTIVE
    clock: Clock = field(default_factory=SystemClock)


class KeyAuthorizationCheck(ABC):
    """A method whose check needs only the name, its wildcard flag and the key authorization
    (dns-01, tls-alpn-01): :meth:`validate`, the registry's entry point
    (:class:`acme_ca.va.registry.MethodCheck`), hands those to :meth:`check`."""

    async def validate(self, request: ChallengeRequest) -> CheckResult:
        return await self.check(
            request.identifier, request.key_authorization, wildcard=request.wildcard
        )

    @abstractmethod
    async def check(
        self, identifier: str, key_authorization: str, *, wildcard: bool = False
    ) -> CheckResult:
        """Never raises for what the network answered: every failure is a problem."""


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

    @classmethod
    def from_json(cls, body: Any) -> CheckResult:
        """Read :meth:`to_json`'s form back; ValueError if the shape is wrong."""
        if not isinstance(body, dict):
            raise FormatError("a check result must be an object")
        ok = body.get("ok")
        if not isinstance(ok, bool):
            raise FormatError("ok must be a boolean")
        records = body.get("records", [])
        if not isinstance(records, list):
            raise FormatError("records must be a list")
        problem = None if body.get("problem") is None else problem_from_json(body["problem"])
        return cls(
            ok=ok,
            problem=problem,
            records=tuple(ValidationRecord.from_json(r) for r in records),
            observed=_optional_text(body, "observed"),
        )

    def to_json(self) -> dict[str, JsonValue]:
        body: dict[str, JsonValue] = {
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


def dcv_records(
    records: Iterable[ValidationRecord],
    *,
    method: DcvMethod,
    identifier: str,
    adn: str | None,
    value: str,
    ok: bool,
) -> tuple[ValidationRecord, ...]:
    """One method check's records, each naming what was validated and how (BR 5.4.1, SC-099);
    the last one -- the hop or lookup that decided -- also carries the check's result.
    ``adn`` None: each record already names the ADN it looked at (the methods that prune,
    :func:`acme_ca.va.adn.adn_records`)."""
    out = [
        replace(
            r,
            identifier=identifier,
            adn=adn if adn is not None else r.adn,
            br_method=method.section,
            value=value,
        )
        for r in records
    ]
    if out:
        out[-1] = replace(out[-1], result="pass" if ok else "fail")
    return tuple(out)
