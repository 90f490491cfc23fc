"""``acme-ca org ...`` and ``acme-ca admin revoke --org``: vetted organizations for OV.

The operator vets an organization outside the CA (CP 3.2.2.1(2), 3.2.5), records the result
with ``org add``, creates EAB keys bound to it (``eab create --org``, in :mod:`acme_ca.cli_eab`)
and hands them to the subscriber.  ``org revoke`` stops OV issuance for it at once;
``admin revoke --org`` revokes its OV certificates.  Each change is an audit event naming the
operator (docs/profiles.md, "Organization Validation workflow").
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from acme_ca.config import Config

if TYPE_CHECKING:  # parsing arguments imports no room (as acme_ca.cli)
    import asyncpg

    from acme_ca.db.organizations import Organization
    from acme_ca.ra.revocation import OperatorRevocation, RevocationAuthority

#: The reason ``admin revoke --org`` uses unless told otherwise (BR 4.9.1.1, 7.2.2: the
#: organization information in the certificates is no longer accurate).
ORG_REVOCATION_REASON = "privilegeWithdrawn"


def add_org_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``org`` command group."""
    org = sub.add_parser(
        "org",
        help="vetted organizations for OV certificates (recorded in the audit trail)",
        description="Organizations an operator has vetted (CP 3.2.2.1(2)). Their record is "
        "the only source of an OV certificate's subject C, ST, L and O; EAB keys created "
        "with `eab create --org ID` bind accounts to them (docs/profiles.md).",
    )
    org_sub = org.add_subparsers(dest="org_command", required=True)
    add = org_sub.add_parser("add", help="record a vetted organization; prints `id: ID` first")
    add.add_argument("--name", required=True, help="organization name (subject O)")
    add.add_argument("--country", required=True, help="ISO 3166-1 alpha-2 (subject C), JP")
    add.add_argument("--state", required=True, help="prefecture (subject ST)")
    add.add_argument("--locality", required=True, help="city, town or village (subject L)")
    add.add_argument(
        "--evidence",
        required=True,
        help="how its existence was verified: registry reference, document id (CP 3.2.2.1)",
    )
    add.add_argument("--vetted-by", required=True, help="who vetted it")
    add.add_argument(
        "--vetted-at",
        required=True,
        metavar="DATE",
        help="when the vetting was completed (ISO 8601 date or time; a date means 00:00 UTC): "
        "the BR 4.2.1 reuse period runs from it",
    )
    add.add_argument("--actor", help="who records this (default: the OS user)")
    org_sub.add_parser("list", help="list organizations")
    show = org_sub.add_parser("show", help="show one organization and its EAB keys")
    show.add_argument("id", type=int)
    revoke = org_sub.add_parser(
        "revoke",
        help="revoke an organization: no OV certificate is issued for it from now on",
        description="Revoke the organization: newOrder, finalize and the signing worker "
        "refuse OV issuance for its accounts from now on. Its certificates stay valid until "
        "`acme-ca admin revoke --org ID`.",
    )
    revoke.add_argument("id", type=int)
    revoke.add_argument("--actor", help="who decided this (default: the OS user)")


def parse_vetted_at(text: str) -> datetime:
    """An ISO 8601 date (00:00 UTC of that day: the earliest reading, so the reuse period
    never runs longer than the vetting allows) or time (UTC when it names no zone)."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _line(org: Organization) -> str:
    return (
        f"{org.id}\t{org.status}\t{org.name}\tC={org.country}\tST={org.state}\t"
        f"L={org.locality}\tvetted_at={org.vetted_at.isoformat()}"
    )


async def run_org(config: Config, args: argparse.Namespace, actor: str) -> int:
    """``acme-ca org add|list|show|revoke``."""
    from acme_ca.clock import SystemClock
    from acme_ca.db.database import operator_pool
    from acme_ca.db.eab import EabKeyRepository
    from acme_ca.db.organizations import OrganizationRepository, VettedOrganization
    from acme_ca.db.settings import DatabaseSettings
    from acme_ca.ra.organizations import organization_field_errors

    now = SystemClock().now()
    vetted = None
    if args.org_command == "add":
        try:
            vetted_at = parse_vetted_at(args.vetted_at)
        except ValueError:
            print(
                f"acme-ca: --vetted-at {args.vetted_at!r} is not an ISO 8601 date", file=sys.stderr
            )
            return 2
        vetted = VettedOrganization(
            name=args.name,
            country=args.country,
            state=args.state,
            locality=args.locality,
            evidence=args.evidence,
            vetted_by=args.vetted_by,
            vetted_at=vetted_at,
        )
        errors = organization_field_errors(vetted, now=now)
        if errors:
            for error in errors:
                print(f"acme-ca: {error}", file=sys.stderr)
            return 2
    async with operator_pool(DatabaseSettings.from_config(config)) as pool:
        repo = OrganizationRepository(pool)
        if args.org_command == "add":
            assert vetted is not None
            org = await repo.add(vetted, now=now, actor=actor)
            print(f"id: {org.id}")
            print(_line(org))
        elif args.org_command == "list":
            for org in await repo.list():
                print(_line(org))
        elif args.org_command == "show":
            found = await repo.get(args.id)
            if found is None:
                print(f"acme-ca: no organization {args.id}", file=sys.stderr)
                return 1
            print(f"id: {found.id}")
            for key, value in (
                ("status", found.status),
                ("name", found.name),
                ("country", found.country),
                ("state", found.state),
                ("locality", found.locality),
                ("evidence", found.evidence),
                ("vetted_by", found.vetted_by),
                ("vetted_at", found.vetted_at.isoformat()),
                ("revoked_at", found.revoked_at.isoformat() if found.revoked_at else "-"),
                ("created_at", found.created_at.isoformat()),
            ):
                print(f"{key}: {value}")
            for k in await EabKeyRepository(pool).list():
                if k.organization_id == found.id:
                    state = "revoked" if k.revoked_at else "active"
                    bound = f"account {k.account_id}" if k.account_id else "unused"
                    print(f"eab_key: {k.kid}\t{state}\t{bound}")
        elif args.org_command == "revoke":
            if not await repo.revoke(args.id, now, actor=actor):
                print(f"acme-ca: no valid organization {args.id}", file=sys.stderr)
                return 1
            print(f"revoked organization {args.id}")
    return 0


async def revoke_org_certificates(
    pool: asyncpg.Pool,
    authority: RevocationAuthority,
    organization_id: int,
    reason: int,
    *,
    actor: str,
    dry_run: bool,
) -> list[OperatorRevocation]:
    """``acme-ca admin revoke --org ID``: the organization's OV certificates, revoked (or
    listed, ``dry_run``) through the RA's operator path, so CRL and OCSP follow."""
    from acme_ca.db.organizations import OrganizationRepository
    from acme_ca.ra.revocation import OperatorRevocationError

    organizations = OrganizationRepository(pool)
    if await organizations.get(organization_id) is None:
        raise OperatorRevocationError(f"no organization {organization_id}")
    accounts = await organizations.account_ids(organization_id)
    return await authority.revoke_organization(accounts, reason, actor=actor, dry_run=dry_run)
