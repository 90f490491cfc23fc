"""External Account Binding keys: created by operators, each bound to at most one account.

A key created for an organization (``organization_id``) binds the account registered with it
to that organization (:mod:`acme_ca.db.organizations`), which OV issuance requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from acme_ca.db.audit import record_event


@dataclass(frozen=True)
class EabKey:
    kid: str
    hmac_key: bytes
    comment: str
    created_at: datetime
    revoked_at: datetime | None
    account_id: int | None
    bound_at: datetime | None
    organization_id: int | None = None


class OrganizationUnavailable(Exception):
    """The organization to bind a new EAB key to is unknown or revoked."""


def _to_key(row: asyncpg.Record) -> EabKey:
    return EabKey(
        kid=row["kid"],
        hmac_key=bytes(row["hmac_key"]),
        comment=row["comment"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        account_id=row["account_id"],
        bound_at=row["bound_at"],
        organization_id=row["organization_id"],
    )


class EabKeyRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        kid: str,
        hmac_key: bytes,
        comment: str,
        now: datetime,
        actor: str,
        *,
        organization_id: int | None = None,
    ) -> EabKey:
        """Store a new key; with ``organization_id``, bound to that organization, which must
        be valid (:class:`OrganizationUnavailable` otherwise)."""
        async with self._pool.acquire() as conn, conn.transaction():
            if organization_id is not None:
                status = await conn.fetchval(
                    "SELECT status FROM organizations WHERE id = $1 FOR SHARE", organization_id
                )
                if status != "valid":
                    raise OrganizationUnavailable(
                        f"organization {organization_id} is "
                        + ("unknown" if status is None else status)
                    )
            row = await conn.fetchrow(
                "INSERT INTO eab_keys (kid, hmac_key, comment, created_at, organization_id)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING *",
                kid,
                hmac_key,
                comment,
                now,
                organization_id,
            )
            await record_event(
                conn,
                "eab.created",
                at=now,
                actor=actor,
                details={"kid": kid, "comment": comment, "organization_id": organization_id},
            )
        return _to_key(row)

    async def get(self, kid: str) -> EabKey | None:
        row = await self._pool.fetchrow("SELECT * FROM eab_keys WHERE kid = $1", kid)
        return _to_key(row) if row else None

    async def list(self) -> list[EabKey]:
        rows = await self._pool.fetch("SELECT * FROM eab_keys ORDER BY created_at, kid")
        return [_to_key(r) for r in rows]

    async def revoke(self, kid: str, now: datetime, actor: str) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE eab_keys SET revoked_at = $2 WHERE kid = $1 AND revoked_at IS NULL",
                kid,
                now,
            )
            changed: bool = status.endswith(" 1")
            if changed:
                await record_event(conn, "eab.revoked", at=now, actor=actor, details={"kid": kid})
        return changed
