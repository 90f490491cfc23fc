"""dns-account-01 (draft-ietf-acme-dns-account-label-00 as BR 3.2.2.4.21 pins it).

The TXT record is ``_<label>._acme-challenge.<ADN>`` where the label is derived from the
account URL, so several ACME accounts (several clients) can validate one name at once without
overwriting each other's ``_acme-challenge`` record:

    label = "_" || lowercase(base32(SHA-256(account URL)[0:10]))

(RFC 4648 base32 of 10 bytes is 16 characters, no padding.)  The value is dns-01's:
base64url(SHA-256(key authorization)).

ADN (BR 3.2.2.4 with SC-101, :mod:`acme_ca.va.adn`): the FQDN (a wildcard's base name) and
then each parent down to the registrable domain; a CNAME at
``_<label>._acme-challenge.<ADN>`` is refused, unlike dns-01's delegated validation.

Corroboration: ``observed`` is the matching digest and the name it was found at, so a remote
perspective corroborates only by finding the same value under the same account label at the
same ADN.  Off unless configured: few clients speak it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Final

import structlog

from acme_ca.acme import problems
from acme_ca.va.adn import AdnLookup, AdnWalker, adn_records
from acme_ca.va.dns01 import CHALLENGE_LABEL, dns01_txt_value, txt_strings
from acme_ca.va.methods import DcvMethod, applied_for
from acme_ca.va.records import ChallengeRequest, CheckResult, PerspectiveCheck, truncate

LABEL: Final = "dns-account-01"
METHOD: Final = DcvMethod(
    label=LABEL,
    section="3.2.2.4.21",
    title="DNS Labeled with Account ID - ACME",
    wildcard=True,
    prune=True,
    cname=False,
)
ACCOUNT_LABEL_BYTES: Final = 10

_log = structlog.get_logger(component=__name__)


def account_label(account_uri: str) -> str:
    """``_`` + lowercase base32 of the first 10 bytes of SHA-256(account URL) (draft 00 §3)."""
    digest = hashlib.sha256(account_uri.encode("utf-8")).digest()[:ACCOUNT_LABEL_BYTES]
    return "_" + base64.b32encode(digest).decode("ascii").lower()


def record_prefix(account_uri: str) -> str:
    """The labels put before the ADN: ``_<label>._acme-challenge``."""
    return f"{account_label(account_uri)}.{CHALLENGE_LABEL}"


def record_name(account_uri: str, adn: str) -> str:
    """Where the account's TXT record for ``adn`` lives."""
    return f"{record_prefix(account_uri)}.{adn.rstrip('.').lower().removeprefix('*.')}"


@dataclass(eq=False, kw_only=True)
class DnsAccountValidator(PerspectiveCheck):
    """Checks the account-labelled ``_acme-challenge`` TXT RRset through the VA's resolver."""

    def __post_init__(self) -> None:
        self._walker = AdnWalker(self.dns, METHOD, perspective=self.perspective, now=self.clock.now)

    async def validate(self, request: ChallengeRequest) -> CheckResult:
        """The registry's entry point."""
        return await self.check(
            request.identifier, request.wildcard, request.key_authorization, request.account_uri
        )

    async def check(
        self, identifier: str, wildcard: bool, key_authorization: str, account_uri: str
    ) -> CheckResult:
        """Pass when the digest is at ``_<label>._acme-challenge.<ADN>`` for some ADN."""
        fqdn = identifier.rstrip(".").lower().removeprefix("*.")
        wildcard = wildcard or identifier.startswith("*.")
        expected = dns01_txt_value(key_authorization)
        prefix = record_prefix(account_uri)
        seen: list[str] = []
        found: list[str] = []

        def accept(lookup: AdnLookup) -> bool:
            values = txt_strings(lookup.answer)
            if expected in values:
                found.append(lookup.name)
                return True
            seen.extend(f"{lookup.name}: {truncate(v, 64)!r}" for v in values[:3])
            return False

        lookups, stopped = await self._walker.walk(prefix, fqdn, accept)
        name = applied_for(fqdn, wildcard)
        if found and stopped is None:
            observed = f"{found[0]}: {expected}"
            return CheckResult.success(
                adn_records(lookups, method=METHOD, identifier=name, value=expected, ok=True),
                observed,
            )
        if stopped is None:
            where = f"{prefix}.{fqdn}"
            if seen:
                stopped = problems.incorrect_response(
                    f"dns-account-01: incorrect TXT record under this account's label "
                    f"{account_label(account_uri)} ({'; '.join(seen)}), none is {expected!r}"
                )
            else:
                stopped = problems.unauthorized(
                    f"dns-account-01: no TXT record at {where} or a parent domain's "
                    f"{prefix} (the label is derived from the account URL {account_uri})"
                )
        _log.info(
            "va.dns_account.failed",
            identifier=fqdn,
            problem=stopped.short_type,
            looked_at=[lookup.name for lookup in lookups],
        )
        return CheckResult.failure(
            stopped,
            adn_records(lookups, method=METHOD, identifier=name, value=expected, ok=False),
        )
