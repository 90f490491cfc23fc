"""Organization Validation rules (CP 3.2.2.1(2), 3.2.5, 7.1.1; BR 3.2.2.1, 4.2.1; OV-1, OV-2).

An OV certificate may be issued only to an account bound (through its EAB key) to an
organization an operator vetted, while that organization is valid and its vetting is within
the BR 4.2.1 reuse period for Subject Identity Information *at the issuance date*
(:func:`acme_ca.br.max_identity_reuse`: 825 days, 398 days from 2026-03-15).  The
profile path asks :meth:`OrganizationPolicy.require` at newOrder and finalize; the signing
worker asks :func:`organization_problem` again with the signing time (``ca/signing_checks.py``),
so revoking an organization stops its OV issuance at once, even for jobs already queued.

The subject is built from the vetted record only (:func:`ov_subject`); nothing a subscriber
puts in the CSR's subject reaches an OV certificate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import structlog
from cryptography import x509
from cryptography.x509.oid import NameOID

from acme_ca.acme import problems
from acme_ca.acme.problems import AcmeError, Problem
from acme_ca.br import RULE_ORGANIZATION, max_identity_reuse
from acme_ca.clock import Clock
from acme_ca.db.organizations import (
    Organization,
    OrganizationRepository,
    OrganizationStatus,
    VettedOrganization,
)

log = structlog.get_logger(component="acme_ca.ra.organizations")

#: CP 4.1.1(2) and 7.1.1: OV applicants are organizations with a place of business in Japan,
#: and the OV subject's countryName is JP.
CP_COUNTRIES: Final = frozenset({"JP"})
#: RFC 5280 upper bounds (ub-organization-name, ub-state-name, ub-locality-name).
MAX_LENGTHS: Final = {"name": 64, "state": 128, "locality": 128}


def organization_field_errors(vetted: VettedOrganization, *, now: datetime) -> list[str]:
    """What is wrong with an organization record an operator is about to add (empty: nothing).

    Every field is required (CP 7.1.1 makes ST, L and O mandatory in an OV subject; the
    evidence and the vetter are the CP 3.2.2.1 / 3.2.5 record of how it was verified)."""
    errors = [
        f"--{flag} is empty"
        for flag, value in (
            ("name", vetted.name),
            ("state", vetted.state),
            ("locality", vetted.locality),
            ("evidence", vetted.evidence),
            ("vetted-by", vetted.vetted_by),
        )
        if not value.strip()
    ]
    if vetted.country not in CP_COUNTRIES:
        errors.append(
            f"--country {vetted.country!r}: the CP (4.1.1, 7.1.1) issues OV certificates to "
            f"organizations in {', '.join(sorted(CP_COUNTRIES))} only"
        )
    for flag, value in (
        ("name", vetted.name),
        ("state", vetted.state),
        ("locality", vetted.locality),
    ):
        if len(value) > MAX_LENGTHS[flag]:
            errors.append(f"--{flag} is longer than {MAX_LENGTHS[flag]} characters (RFC 5280)")
        if value != value.strip() or any(not c.isprintable() for c in value):
            errors.append(f"--{flag} has leading/trailing spaces or control characters")
    if vetted.vetted_at > now:
        errors.append(f"--vetted-at {vetted.vetted_at.isoformat()} is in the future")
    return errors


def organization_problem(org: Organization | None, at: datetime) -> Problem | None:
    """Why an OV certificate may not be issued at ``at`` for an account bound to ``org``
    (None: it may).  ``unauthorized``, naming the reason."""
    if org is None:
        reason = (
            "the account is not bound to a vetted organization: register it with an EAB key "
            "the CA created for the organization (`acme-ca eab create --org`)"
        )
    elif org.status is not OrganizationStatus.VALID:
        when = org.revoked_at.date().isoformat() if org.revoked_at else "?"
        reason = f"organization {org.id} ({org.name}) was revoked on {when}"
    elif org.vetted_at > at:
        reason = f"organization {org.id} ({org.name}) is vetted from {org.vetted_at.isoformat()}"
    else:
        limit = max_identity_reuse(at)
        age = at - org.vetted_at
        if age <= limit:
            return None
        reason = (
            f"organization {org.id} ({org.name}) was vetted on {org.vetted_at.date().isoformat()}"
            f", {age.days} days before {at.date().isoformat()}; from that date vetted "
            f"organization data may be reused for at most {limit.days} days (BR 4.2.1): the "
            "CA must vet it again"
        )
    refusal: Problem = problems.unauthorized(f"{RULE_ORGANIZATION}: {reason}")
    return refusal


def ov_subject(org: Organization, common_name: str | None) -> x509.Name:
    """The OV subject (CP 7.1.1 "(2) Organization Validation"; BR 7.1.4.2): C, ST, L, O from
    the vetted record, then CN when the profile includes one, one attribute per RDN in the
    BR 7.1.4 order.  The CSR's subject is never consulted."""
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, org.country),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, org.state),
        x509.NameAttribute(NameOID.LOCALITY_NAME, org.locality),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org.name),
    ]
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


class OrganizationPolicy:
    """The OV gate of newOrder and finalize for a profile that requires an organization."""

    def __init__(self, organizations: OrganizationRepository, clock: Clock) -> None:
        self._organizations = organizations
        self._clock = clock

    async def check(self, account_id: int, at: datetime) -> Problem | None:
        """Why the account may not have an OV certificate issued at ``at`` (None: it may);
        the shape of ``ra.profiles.OrganizationCheck``."""
        return organization_problem(
            await self._organizations.organization_for_account(account_id), at
        )

    async def subject(self, account_id: int) -> x509.Name | None:
        """The vetted C, ST, L, O of the account's organization (:func:`ov_subject` without
        CN; the profile adds it), or None when it may not have an OV certificate now (the
        shape of ``ca.issuance_steps.OrganizationSubject``)."""
        org = await self._organizations.organization_for_account(account_id)
        if org is None or organization_problem(org, self._clock.now()) is not None:
            return None
        return ov_subject(org, None)

    async def require(self, account_id: int) -> Organization:
        """The account's organization, when OV issuance is allowed now; otherwise raises
        ``AcmeError(unauthorized)`` with the reason."""
        org = await self._organizations.organization_for_account(account_id)
        problem = organization_problem(org, self._clock.now())
        if problem is not None:
            log.info(
                "organization.refused",
                account_id=account_id,
                organization_id=org.id if org else None,
                detail=problem.detail,
            )
            raise AcmeError(problem)
        assert org is not None
        return org
