"""CAA checking (RFC 8659, RFC 8657, BR §3.2.2.8): pure apart from the injected DNS lookup.

``check_caa`` never raises for a refusal: it returns a :class:`CaaDecision` that records what
was asked, where the relevant RRset was found and why the answer is what it is, so the VA can
log it (BR §3.2.2.8 wants blocked issuance logged) and turn ``allowed=False`` into a ``caa``
problem.  Every lookup failure is a refusal: this CA never takes the BR's option to treat a
failure as permission (checklist CAA-10, CAA-11).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

#: Our issuer domain as published in our CP/CPS (checklist section 2).
DEFAULT_ISSUER_DOMAINS: Final = ("jprs.jp",)

#: RFC 8659 §4.1: the Issuer Critical Flag is the bit with value 128; other bits are ignored.
CRITICAL_FLAG: Final = 0x80

TAG_ISSUE: Final = "issue"
TAG_ISSUEWILD: Final = "issuewild"
TAG_IODEF: Final = "iodef"
#: Tags this CA understands; any other tag with the critical flag blocks issuance.
KNOWN_TAGS: Final = frozenset({TAG_ISSUE, TAG_ISSUEWILD, TAG_IODEF})

#: RFC 8657 parameters.
PARAM_ACCOUNT_URI: Final = "accounturi"
PARAM_VALIDATION_METHODS: Final = "validationmethods"

# Decision reasons: one per outcome, for logs, metrics and tests.
REASON_NO_CAA: Final = "no CAA records at the name or any parent"
REASON_NO_ISSUE_PROPERTY: Final = "relevant CAA RRset has no issue properties for this request"
REASON_AUTHORIZED: Final = "a relevant issue property authorizes this CA"
REASON_NOT_AUTHORIZED: Final = "no relevant issue property authorizes this CA and request"
REASON_UNKNOWN_CRITICAL: Final = "relevant CAA RRset has an unknown tag marked critical"
REASON_LOOKUP_FAILED: Final = "CAA lookup failed; a failure is never permission"
REASON_INVALID_NAME: Final = "name to check is not a valid domain name"

# RFC 8659 §4.2 ABNF, ASCII only.  WSP is SP / HTAB.
_WSP = "[ \t]*"
_LABEL = "[A-Za-z0-9](?:-*[A-Za-z0-9])*"
_ISSUER_DOMAIN_RE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.ASCII)
_PARAMETER_RE: Final = re.compile(
    rf"(?P<tag>{_LABEL}){_WSP}={_WSP}(?P<value>[\x21-\x3a\x3c-\x7e]*)", re.ASCII
)
#: RFC 8657 §4: value = [*(label ",") label], label = 1*(ALPHA / DIGIT / "-").
_METHODS_RE: Final = re.compile(r"[A-Za-z0-9-]+(?:,[A-Za-z0-9-]+)*", re.ASCII)
_WSP_CHARS = " \t"


@dataclass(frozen=True)
class CaaRecord:
    """One CAA resource record (RFC 8659 §4.1), as the resolver returned it."""

    flags: int
    tag: str
    value: str

    @property
    def critical(self) -> bool:
        """Bit 128 only: RFC 8659 says the reserved bits MUST be ignored."""
        return bool(self.flags & CRITICAL_FLAG)

    @property
    def normalized_tag(self) -> str:
        """Tags are case-insensitive (RFC 8659 §4.1)."""
        return self.tag.lower()


class LookupFailure(enum.StrEnum):
    """Why a CAA query produced no usable answer; each one blocks issuance."""

    SERVFAIL = "servfail"
    TIMEOUT = "timeout"
    BOGUS = "bogus"  # DNSSEC validation failed


@dataclass(frozen=True)
class CaaLookupResult:
    """The answer to one CAA query, kept whole for the audit record.

    The lookup function follows CNAME/DNAME itself and reports NXDOMAIN and NODATA as an empty
    ``records`` tuple (RFC 8659 §3: both mean an empty RRset).  ``authenticated`` is the
    resolver's DNSSEC verdict when known (AD bit), logged but not used to grant permission.
    """

    query_name: str
    records: tuple[CaaRecord, ...] = ()
    failure: LookupFailure | None = None
    authenticated: bool | None = None

    def __post_init__(self) -> None:
        if self.failure is not None and self.records:
            raise ValueError("a failed CAA lookup cannot carry records")


CaaLookup = Callable[[str], Awaitable[CaaLookupResult]]


@dataclass(frozen=True)
class IssueValue:
    """A parsed ``issue``/``issuewild`` value (RFC 8659 §4.2).

    ``issuer_domain`` is None when the value names no CA (``";"``) or is malformed.
    ``parameters`` keeps every ``tag=value`` pair in order, tags lower-cased, so that repeated
    parameters stay visible (RFC 8657 makes a repeated ``accounturi`` unsatisfiable); it is None
    when the value is malformed, which RFC 8659 treats as naming no CA.
    """

    issuer_domain: str | None
    parameters: tuple[tuple[str, str], ...] | None

    @property
    def malformed(self) -> bool:
        return self.parameters is None

    def values(self, tag: str) -> tuple[str, ...]:
        """Every value given for ``tag`` (case-insensitive); empty if absent or malformed."""
        wanted = tag.lower()
        return tuple(v for t, v in self.parameters or () if t == wanted)


_MALFORMED: Final = IssueValue(issuer_domain=None, parameters=None)


def parse_issue_value(value: str) -> IssueValue:
    """Parse per the RFC 8659 §4.2 ABNF; anything that does not match is malformed.

    ``issue-value = *WSP [issuer-domain-name *WSP] [";" *WSP [parameters *WSP]]`` where
    parameters are ``tag *WSP "=" *WSP value`` separated by ``*WSP ";" *WSP``.  A trailing
    ``;`` after the last parameter does not match the grammar and so is malformed.
    """
    domain_part, sep, params_part = value.partition(";")
    domain = domain_part.strip(_WSP_CHARS)
    if domain and _ISSUER_DOMAIN_RE.fullmatch(domain) is None:
        return _MALFORMED
    issuer = domain or None
    params_text = params_part.strip(_WSP_CHARS)
    if not sep or not params_text:
        return IssueValue(issuer_domain=issuer, parameters=())
    parameters: list[tuple[str, str]] = []
    for chunk in params_text.split(";"):
        match = _PARAMETER_RE.fullmatch(chunk.strip(_WSP_CHARS))
        if match is None:
            return _MALFORMED
        parameters.append((match["tag"].lower(), match["value"]))
    return IssueValue(issuer_domain=issuer, parameters=tuple(parameters))


@dataclass(frozen=True)
class CaaDecision:
    """The outcome of a CAA check, with everything the audit log needs."""

    allowed: bool
    reason: str
    relevant_name: str | None
    records: tuple[CaaRecord, ...]
    lookups: tuple[CaaLookupResult, ...]

    @property
    def detail(self) -> str:
        """Text for the ``caa`` problem when ``allowed`` is False."""
        failed = self.lookups[-1] if self.lookups else None
        if failed is not None and failed.failure is not None:
            return f"CAA lookup for {failed.query_name} failed ({failed.failure}): {self.reason}"
        where = f" at {self.relevant_name}" if self.relevant_name else ""
        return f"CAA record set{where}: {self.reason}"


def _climb(name: str) -> list[str]:
    """The name, then each parent, stopping before the root (RFC 8659 §3)."""
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def _parameters_satisfied(issue: IssueValue, *, account_uri: str, validation_method: str) -> bool:
    """RFC 8657: ``accounturi`` must match exactly; ``validationmethods`` must list ours.

    A repeated parameter is unsatisfiable (RFC 8657 §3 for accounturi; we apply the same rule to
    validationmethods rather than guess which copy counts).  Unknown parameters are ignored.
    """
    account_uris = issue.values(PARAM_ACCOUNT_URI)
    if account_uris and (
        len(account_uris) > 1 or not account_uri or account_uris[0] != account_uri
    ):
        return False
    methods = issue.values(PARAM_VALIDATION_METHODS)
    if not methods:
        return True
    if len(methods) > 1 or _METHODS_RE.fullmatch(methods[0]) is None:
        return False
    return validation_method in methods[0].split(",")


def _authorizes(
    record: CaaRecord,
    issuer_domains: frozenset[str],
    *,
    account_uri: str,
    validation_method: str,
) -> bool:
    issue = parse_issue_value(record.value)
    if issue.issuer_domain is None or issue.issuer_domain.lower() not in issuer_domains:
        return False
    return _parameters_satisfied(
        issue, account_uri=account_uri, validation_method=validation_method
    )


def evaluate_rrset(
    records: Sequence[CaaRecord],
    *,
    wildcard: bool,
    issuer_domains: Sequence[str] = DEFAULT_ISSUER_DOMAINS,
    account_uri: str,
    validation_method: str,
) -> tuple[bool, str]:
    """Decide on one relevant RRset (RFC 8659 §4): ``(allowed, reason)``; pure, for reuse."""
    if any(r.critical and r.normalized_tag not in KNOWN_TAGS for r in records):
        return False, REASON_UNKNOWN_CRITICAL
    issue = [r for r in records if r.normalized_tag == TAG_ISSUE]
    issuewild = [r for r in records if r.normalized_tag == TAG_ISSUEWILD]
    # RFC 8659 §4.3: issuewild is ignored for non-wildcards and, when present, overrides
    # every issue property for a wildcard.
    relevant = issuewild if wildcard and issuewild else issue
    if not relevant:
        return True, REASON_NO_ISSUE_PROPERTY
    ours = frozenset(d.lower().rstrip(".") for d in issuer_domains)
    if any(
        _authorizes(r, ours, account_uri=account_uri, validation_method=validation_method)
        for r in relevant
    ):
        return True, REASON_AUTHORIZED
    return False, REASON_NOT_AUTHORIZED


async def check_caa(
    name: str,
    *,
    wildcard: bool,
    issuer_domains: Sequence[str] = DEFAULT_ISSUER_DOMAINS,
    account_uri: str,
    validation_method: str,
    lookup: CaaLookup,
) -> CaaDecision:
    """Find the relevant CAA RRset for ``name`` and decide whether we may issue.

    ``name`` is the base domain; a leading ``*.`` is stripped and forces ``wildcard``.  The
    climb queries the name and then each parent, one at a time, and stops at the first
    non-empty answer.  Aliases are the lookup's business: the climb always continues from the
    parent of the name asked, never from an alias target (RFC 8659 §3).  Exceptions raised by
    ``lookup`` propagate; DNS failures must come back as a ``LookupFailure``.
    """
    if name.startswith("*."):
        name, wildcard = name[2:], True
    name = name.lower().rstrip(".")
    if not name or "" in name.split("."):
        return CaaDecision(False, REASON_INVALID_NAME, None, (), ())
    lookups: list[CaaLookupResult] = []
    for candidate in _climb(name):
        result = await lookup(candidate)
        lookups.append(result)
        if result.failure is not None:
            return CaaDecision(False, REASON_LOOKUP_FAILED, None, (), tuple(lookups))
        if result.records:
            allowed, reason = evaluate_rrset(
                result.records,
                wildcard=wildcard,
                issuer_domains=issuer_domains,
                account_uri=account_uri,
                validation_method=validation_method,
            )
            return CaaDecision(allowed, reason, candidate, result.records, tuple(lookups))
    return CaaDecision(True, REASON_NO_CAA, None, (), tuple(lookups))
