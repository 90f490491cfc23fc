"""dns-persist-01 (draft-ietf-acme-dns-persist-02; BR 3.2.2.4.22 "Persistent DNS TXT Record").

The subscriber publishes, once, a TXT record at ``_validation-persist.<ADN>`` whose value is
an RFC 8659 issue-value: one of our Issuer Domain Names (the ``caa_identities``, which the
challenge object lists as ``issuer-domain-names``) and the parameters

* ``accounturi=<account URL>`` (mandatory; RFC 8657 §3, compared as a simple string);
* ``policy=wildcard`` (optional): the record also covers wildcard certificates and
  subdomains of its FQDN.  Any other value counts as absent (case-insensitive);
* ``persistUntil=<unix seconds>`` (optional): the record may not complete a validation after
  that instant (already-validated data is governed by the reuse limit, not by it).

Parsing follows the draft and RFC 8659 §4: whitespace (SP, HTAB) around the issuer, tags and
values is ignored, tags are case-insensitive, unknown tags are ignored, but an empty parameter
(a trailing ``;``), a parameter without ``=``, a value outside %x21-3A / %x3C-7E, a repeated
known tag, a missing ``accounturi`` or a non-integer ``persistUntil`` make the record malformed.
Records naming another issuer are ignored entirely (another CA's business, as the draft's
"filter records" step says); a malformed record naming ours is reported.

Which ADN (BR 3.2.2.4 with SC-101, :mod:`acme_ca.va.adn`): the applied-for FQDN (for a
wildcard, its base name) first, then each parent down to the registrable domain.  A record at
the FQDN covers the FQDN, and with ``policy=wildcard`` the wildcard too; a record at a parent
counts only with ``policy=wildcard`` (the draft's subdomain validation).  A CNAME at
``_validation-persist.<ADN>`` is refused.

Corroboration (BR 3.2.2.9): ``observed`` is the matching record in canonical form with the
name it was found at, so a remote perspective corroborates only by finding the same record,
for the same ``accounturi``, at the same ADN.

Reuse: BR 3.2.2.4.22 lets an authorization from this method be reused for at most
:data:`REUSE_LIMIT` whatever the BR 4.2.1 period; ``ra/`` and ``ca/recheck.py`` apply it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import structlog

from acme_ca.acme import problems
from acme_ca.acme.issuer_names import issuer_domain_names, normalize_issuer_domain_name
from acme_ca.acme.problems import Problem
from acme_ca.br import PERSISTENT_TXT_REUSE
from acme_ca.va.adn import AdnLookup, AdnWalker, adn_records
from acme_ca.va.dns01 import txt_strings
from acme_ca.va.methods import DcvMethod, applied_for
from acme_ca.va.records import ChallengeRequest, CheckResult, PerspectiveCheck, truncate

LABEL: Final = "dns-persist-01"
PREFIX: Final = "_validation-persist"
METHOD: Final = DcvMethod(
    label=LABEL,
    section="3.2.2.4.22",
    title="DNS TXT Record with Persistent Value",
    wildcard=True,
    prune=True,
    cname=False,
)
REUSE_LIMIT: Final = PERSISTENT_TXT_REUSE
"""BR 3.2.2.4.22 (and BR 4.2.1's table): validations by this method are reused at most 10
days, whatever the general reuse period of the day (:data:`acme_ca.br.PERSISTENT_TXT_REUSE`)."""

TAG_ACCOUNT_URI: Final = "accounturi"
TAG_POLICY: Final = "policy"
TAG_PERSIST_UNTIL: Final = "persistuntil"
POLICY_WILDCARD: Final = "wildcard"

_WSP: Final = " \t"
_VALUE_RE: Final = re.compile(r"[\x21-\x3a\x3c-\x7e]*")
_INTEGER_RE: Final = re.compile(r"[+-]?[0-9]+")
_LATEST: Final = datetime.max.replace(tzinfo=UTC)
_EARLIEST: Final = datetime.min.replace(tzinfo=UTC)

_log = structlog.get_logger(component=__name__)


class PersistRecordError(ValueError):
    """A TXT value naming one of our issuers that is not a valid dns-persist-01 record."""


@dataclass(frozen=True)
class PersistRecord:
    """One parsed ``_validation-persist`` TXT value."""

    issuer: str
    account_uri: str
    wildcard: bool = False
    persist_until: datetime | None = None

    def canonical(self) -> str:
        """The record as compared across perspectives: issuer, accounturi, policy."""
        text = f"{self.issuer}; {TAG_ACCOUNT_URI}={self.account_uri}"
        return text + (f"; {TAG_POLICY}={POLICY_WILDCARD}" if self.wildcard else "")


def record_issuer(value: str) -> str | None:
    """The normalised issuer-domain-name a TXT value starts with; None if it has none we can
    read (then it is nobody's record we need to look at)."""
    try:
        return normalize_issuer_domain_name(value.split(";", 1)[0])
    except ValueError:
        return None


def parse_persist_record(value: str) -> PersistRecord:
    """Parse one TXT value as an issue-value with dns-persist-01 parameters (see the module
    docstring for what is tolerated and what is not); raises :class:`PersistRecordError`."""
    head, *params = value.split(";")
    try:
        issuer = normalize_issuer_domain_name(head)
    except ValueError as exc:
        raise PersistRecordError(str(exc)) from None
    seen: dict[str, str] = {}
    for raw in params:
        param = raw.strip(_WSP)
        if not param:
            raise PersistRecordError("empty parameter or trailing semicolon")
        tag, sep, tag_value = param.partition("=")
        tag, tag_value = tag.strip(_WSP), tag_value.strip(_WSP)
        if not sep or not tag:
            raise PersistRecordError(f"parameter {param!r} is not tag=value")
        if _VALUE_RE.fullmatch(tag_value) is None:
            raise PersistRecordError(f"value {tag_value!r} of {tag!r} has forbidden characters")
        key = tag.lower()
        if key not in (TAG_ACCOUNT_URI, TAG_POLICY, TAG_PERSIST_UNTIL):
            continue  # the draft: unknown tags MUST be ignored
        if key in seen:
            raise PersistRecordError(f"parameter {tag!r} appears more than once")
        seen[key] = tag_value
    account_uri = seen.get(TAG_ACCOUNT_URI, "")
    if not account_uri:
        raise PersistRecordError("the mandatory accounturi parameter is missing or empty")
    return PersistRecord(
        issuer=issuer,
        account_uri=account_uri,
        wildcard=seen.get(TAG_POLICY, "").lower() == POLICY_WILDCARD,
        persist_until=(_unix_time(seen[TAG_PERSIST_UNTIL]) if TAG_PERSIST_UNTIL in seen else None),
    )


def _unix_time(text: str) -> datetime:
    """``persistUntil``: base-10 seconds since the epoch, UTC; out-of-range values clamp to
    the earliest or latest representable time (still expired, or not yet)."""
    if _INTEGER_RE.fullmatch(text) is None:
        raise PersistRecordError(f"persistUntil {text!r} is not a base-10 integer")
    seconds = int(text)
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return _LATEST if seconds > 0 else _EARLIEST


def record_refusal(
    record: PersistRecord,
    *,
    account_uri: str,
    wildcard: bool,
    at_fqdn: bool,
    now: datetime,
) -> str | None:
    """Why a well-formed record of ours does not authorise this validation, or None."""
    if record.account_uri != account_uri:
        return f"accounturi is {record.account_uri!r}, this account is {account_uri!r}"
    if wildcard and not record.wildcard:
        return "a wildcard certificate needs policy=wildcard"
    if not at_fqdn and not record.wildcard:
        return "a record at a parent domain covers its subdomains only with policy=wildcard"
    if record.persist_until is not None and now > record.persist_until:
        return f"persistUntil {record.persist_until.isoformat()} has passed"
    return None


@dataclass
class _Evaluation:
    """What the walk saw so far, for the verdict and the problem's detail."""

    match: PersistRecord | None = None
    matched_at: str | None = None
    malformed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    others: int = 0


@dataclass(eq=False, kw_only=True)
class DnsPersistValidator(PerspectiveCheck):
    """Checks ``_validation-persist`` TXT records through the VA's resolver; ``issuers``
    are this CA's issuer domain names (normalised on construction)."""

    issuers: Sequence[str] = field(kw_only=False)

    def __post_init__(self) -> None:
        self.issuers = issuer_domain_names(self.issuers)
        self._walker = AdnWalker(self.dns, METHOD, perspective=self.perspective, now=self.clock.now)

    def expected_value(self, account_uri: str) -> str:
        """What a record must hold, for records and problems."""
        return f"{' | '.join(self.issuers)}; {TAG_ACCOUNT_URI}={account_uri}"

    async def validate(self, request: ChallengeRequest) -> CheckResult:
        """The registry's entry point: the record is bound to the account, not the token."""
        return await self.check(request.identifier, request.wildcard, request.account_uri)

    async def check(self, identifier: str, wildcard: bool, account_uri: str) -> CheckResult:
        """Pass when a record of ours for this account authorises the name at some ADN."""
        fqdn = identifier.rstrip(".").lower().removeprefix("*.")
        wildcard = wildcard or identifier.startswith("*.")
        now = self.clock.now()
        seen = _Evaluation()

        def accept(lookup: AdnLookup) -> bool:
            at_fqdn = lookup.adn == fqdn
            for value in txt_strings(lookup.answer):
                issuer = record_issuer(value)
                if issuer is None or issuer not in self.issuers:
                    seen.others += 1
                    continue
                try:
                    record = parse_persist_record(value)
                except PersistRecordError as exc:
                    seen.malformed.append(f"{lookup.name}: {exc} in {truncate(value, 96)!r}")
                    continue
                refusal = record_refusal(
                    record, account_uri=account_uri, wildcard=wildcard, at_fqdn=at_fqdn, now=now
                )
                if refusal is not None:
                    seen.refused.append(f"{lookup.name}: {refusal}")
                    continue
                seen.match, seen.matched_at = record, lookup.name
                return True
            return False

        lookups, stopped = await self._walker.walk(PREFIX, fqdn, accept)
        name = applied_for(fqdn, wildcard)
        if seen.match is not None and stopped is None:
            observed = f"{seen.matched_at}: {seen.match.canonical()}"
            records = adn_records(lookups, method=METHOD, identifier=name, value=observed, ok=True)
            return CheckResult.success(records, observed)
        problem = stopped or self._problem(fqdn, seen, account_uri)
        records = adn_records(
            lookups,
            method=METHOD,
            identifier=name,
            value=self.expected_value(account_uri),
            ok=False,
        )
        _log.info(
            "va.dns_persist.failed",
            identifier=fqdn,
            wildcard=wildcard,
            problem=problem.short_type,
            looked_at=[lookup.name for lookup in lookups],
        )
        return CheckResult.failure(problem, records)

    def _problem(self, fqdn: str, seen: _Evaluation, account_uri: str) -> Problem:
        """Boulder's and Pebble's precedence: a malformed record of ours is ``malformed``,
        a well-formed one that does not authorise is ``unauthorized``, none at all is
        ``unauthorized`` naming what was expected."""
        if seen.malformed:
            return problems.malformed(
                "dns-persist-01: malformed TXT record: " + "; ".join(seen.malformed)
            )
        if seen.refused:
            return problems.unauthorized(
                "dns-persist-01: no TXT record authorises this validation: "
                + "; ".join(seen.refused)
            )
        where = f"{PREFIX}.{fqdn}"
        other = f" ({seen.others} for other issuers ignored)" if seen.others else ""
        return problems.unauthorized(
            f"dns-persist-01: no TXT record for this CA at {where} or a parent{other}; "
            f"expected {self.expected_value(account_uri)!r}"
        )
