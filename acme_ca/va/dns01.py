"""dns-01 validation (RFC 8555 §8.4, BR §3.2.2.4.7, ACME-CHAL-6, BR-DCV-4).

The TXT RRset at ``_acme-challenge.<ADN>`` must hold base64url(SHA-256(key authorization)).
The ADN is the applied-for FQDN itself, for a wildcard the name without ``*.``: BR 3.2.2.4
(SC-101) would let this method prune labels or take a CNAME target of the FQDN as the ADN,
and this CA does neither (see :mod:`acme_ca.va.methods`).  What the resolver client does
follow is a CNAME *at* ``_acme-challenge.<ADN>`` -- the BR's "record returned in a query for"
the underscore-prefixed ADN, i.e. delegated validation; the chain is in the record.

A name may carry several values at once (a wildcard and its base name validated together, or
an old value left behind), so any one matching is enough.  The lookup goes through our
validating resolver; a failure is a ``dns`` problem and never a pass.  ``observed`` is the
matching value, or every value seen when none matched.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import structlog

from acme_ca.acme import problems
from acme_ca.acme.b64 import b64url_encode
from acme_ca.va.methods import DcvMethod, applied_for, authorization_domain_name
from acme_ca.va.records import (
    CheckResult,
    KeyAuthorizationCheck,
    PerspectiveCheck,
    ValidationRecord,
    dcv_records,
    dns_record,
    truncate,
)
from acme_ca.va.resolver import DnsAnswer

CHALLENGE_LABEL: Final = "_acme-challenge"
METHOD: Final = DcvMethod(
    label="dns-01",
    section="3.2.2.4.7",
    title="DNS Change",
    wildcard=True,
    prune=True,
    cname=True,
)

_log = structlog.get_logger(component=__name__)


def dns01_txt_value(key_authorization: str) -> str:
    """RFC 8555 §8.4: the TXT value is base64url(SHA-256(keyAuthorization)), unpadded."""
    return b64url_encode(hashlib.sha256(key_authorization.encode("ascii")).digest())


def challenge_name(identifier: str) -> str:
    """``_acme-challenge.<ADN>``; a wildcard is validated at its base name (RFC 8555 §8.4)."""
    return f"{CHALLENGE_LABEL}.{authorization_domain_name(METHOD, identifier, False)}"


def txt_strings(answer: DnsAnswer) -> list[str]:
    """Each TXT record's character-strings joined, as RFC 8555 clients publish long values."""
    values: list[str] = []
    for rdata in answer.records:
        strings: tuple[bytes, ...] = rdata.strings  # type: ignore[attr-defined]
        values.append(b"".join(strings).decode("utf-8", "replace"))
    return values


@dataclass(eq=False, kw_only=True)
class Dns01Validator(PerspectiveCheck, KeyAuthorizationCheck):
    """Checks the ``_acme-challenge`` TXT RRset through the VA's resolver."""

    async def check(
        self, identifier: str, key_authorization: str, *, wildcard: bool = False
    ) -> CheckResult:
        """Pass when any TXT value at the challenge name equals the expected digest."""
        adn = authorization_domain_name(METHOD, identifier, wildcard)
        name = f"{CHALLENGE_LABEL}.{adn}"
        expected = dns01_txt_value(key_authorization)
        at = self.clock.now()
        answer = await self.dns.query(name, "TXT")
        record = dns_record(
            answer, method=METHOD.label, hostname=adn, at=at, perspective=self.perspective
        )

        def records(ok: bool) -> tuple[ValidationRecord, ...]:
            return dcv_records(
                (record,),
                method=METHOD,
                identifier=applied_for(adn, wildcard or identifier.startswith("*.")),
                adn=adn,
                value=expected,
                ok=ok,
            )

        if not answer.ok:
            detail = f"DNS problem: {answer.failure} looking up TXT for {name}"
            if answer.error:
                detail += f": {answer.error}"
            _log.info("va.dns01.failed", name=name, failure=str(answer.failure))
            return CheckResult.failure(problems.dns(detail), records(False))
        values = txt_strings(answer)
        if expected in values:
            return CheckResult.success(records(True), expected)
        observed = "\n".join(sorted(values)) if values else None
        if not values:
            detail = f"No TXT record found at {name}"
        else:
            shown = ", ".join(repr(truncate(v, 64)) for v in values[:3])
            detail = (
                f"Incorrect TXT record at {name}: {len(values)} found ({shown}), "
                f"none is {expected!r}"
            )
        _log.info("va.dns01.failed", name=name, found=len(values))
        return CheckResult.failure(problems.incorrect_response(detail), records(False), observed)
