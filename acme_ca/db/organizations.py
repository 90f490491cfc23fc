"""Vetted organizations (CP 3.2.2.1(2), 3.2.2.3, 3.2.5) and the accounts bound to them.

An operator vets an organization outside the CA, records it here (``acme-ca org add``) and
creates EAB keys bound to it (``acme-ca eab create --org``); the account registered with such a
key belongs to the organization.  A record is never edited: what it says is what was vetted on
``vetted_at``.  Revoking it is the one change, and stops OV issuance for its accounts at once
(newOrder, finalize and the signing-time re-check all read the status).  Every change is one
transaction with its audit row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import asyncpg

from acme_ca.db.audit import record_event


class OrganizationStatus(StrEnum):
    VALID = "valid"
    REVOKED = "revoked"


@dataclass(frozen=True)
class VettedOrganization:
    """What an operator records after vetting an organization (``acme-ca org add``)."""

    name: str
    country: str
    state: str
    locality: str
    #: Where the vetting found the organization (registry reference, document id): CP 3.2.2.1.
    evidence: str
    vetted_by: str
    #: When the vetting was completed: the BR 4.2.1 reuse period runs from here.
    vetted_at: datetime


@dataclass(frozen=True, kw_only=True)
class Organization(VettedOrganization):
    """One vetted organization, as recorded: the only source of an OV subject's C/ST/L/O."""

    id: int
    status: OrganizationStatus
    revoked_at: datetime | None
    created_at: datetime


def _to_organization(row: asyncpg.Record) -> Organization:
    return Organization(
        id=row["id"],
        name=row["name"],
        country=row["country"],
        state=row["state"],
        locality=row["locality"],
        evidence=row["evidence"],
        vetted_by=row["vetted_by"],
        vetted_at=row["vetted_at"],
        status=OrganizationStatus(row["status"]),
        revoked_at=row["revoked_at"],
        created_at=row["created_at"],
    )


def _audit(org: Organization) -> dict[str, str | int]:
    return {
        "organization_id": org.id,
        "name": org.name,
        "country": org.country,
        "state": org.state,
        "locality": org.locality,
        "evidence": org.evidence,
        "vetted_by": org.vetted_by,
        "vetted_at": org.vetted_at.isoformat(),
    }


class OrganizationRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(self, vetted: VettedOrganization, *, now: datetime, actor: str) -> Organization:
        """Record a vetted organization (the values are checked by the caller and again by
        the table's constraints)."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """INSERT INTO organizations (name, country, state, locality, evidence,
                                              vetted_by, vetted_at, created_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *""",
                vetted.name,
                vetted.country,
                vetted.state,
                vetted.locality,
                vetted.evidence,
                vetted.vetted_by,
                vetted.vetted_at,
                now,
            )
            org = _to_organization(row)
            await record_event(conn, "organization.added", at=now, actor=actor, details=_audit(org))
        return org

    async def get(self, organization_id: int) -> Organization | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM organizations WHERE id = $1", organization_id
        )
        return _to_organization(row) if row else None

    async def revoke(self, organization_id: int, now: datetime, actor: str) -> bool:
        """Mark the organization revoked; False when it is unknown or already revoked."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """UPDATE organizations SET status = 'revoked', revoked_at = $2
                   WHERE id = $1 AND status = 'valid' RETURNING *""",
                organization_id,
                now,
            )
            if row is None:
                return False
            await record_event(
                conn,
                "organization.revoked",
                at=now,
                actor=actor,
                details=_audit(_to_organization(row)),
            )
        return True

    async def organization_for_account(self, account_id: int) -> Organization | None:
        """The organization the account is bound to through the EAB key it registered with
        (whatever its status); None without one, or once that EAB key is revoked."""
        row = await self._pool.fetchrow(
            """SELECT o.* FROM accounts a
               JOIN eab_keys k ON k.kid = a.eab_kid AND k.account_id = a.id
               JOIN organizations o ON o.id = k.organization_id
               WHERE a.id = $1 AND k.revoked_at IS NULL""",
            account_id,
        )
        return _to_organization(row) if row else None

    async def account_ids(self, organization_id: int) -> list[int]:
        """The accounts bound to the organization (through any of its EAB keys)."""
        rows = await self._pool.fetch(
            """SELECT k.account_id FROM eab_keys k
               WHERE k.organization_id = $1 AND k.account_id IS NOT NULL
               ORDER BY k.account_id""",
            organization_id,
        )
        return [r["account_id"] for r in rows]

    async def list(self) -> list[Organization]:
        rows = await self._pool.fetch("SELECT * FROM organizations ORDER BY id")
        return [_to_organization(r) for r in rows]
