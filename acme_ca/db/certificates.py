"""Certificates: issued ones are found by serial; revocation is one conditional update."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from acme_ca.db.audit import record_event


@dataclass(frozen=True)
class CertificateRecord:
    id: int
    order_id: int | None
    account_id: int
    serial: str
    issuer: str
    der: bytes
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None
    revocation_reason: int | None
    chain_pem: str
    alternate_chains: list[str]


def _record(row: asyncpg.Record) -> CertificateRecord:
    return CertificateRecord(
        id=row["id"],
        order_id=row["order_id"],
        account_id=row["account_id"],
        serial=row["serial"],
        issuer=row["issuer"],
        der=bytes(row["der"]),
        not_before=row["not_before"],
        not_after=row["not_after"],
        revoked_at=row["revoked_at"],
        revocation_reason=row["revocation_reason"],
        chain_pem=row["chain_pem"],
        alternate_chains=list(row["alternate_chains"]),
    )


class CertificateRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, certificate_id: int) -> CertificateRecord | None:
        row = await self._pool.fetchrow("SELECT * FROM certificates WHERE id = $1", certificate_id)
        return _record(row) if row else None

    async def get_by_serial(self, serial: str) -> CertificateRecord | None:
        row = await self._pool.fetchrow("SELECT * FROM certificates WHERE serial = $1", serial)
        return _record(row) if row else None

    async def revoke(self, certificate_id: int, *, reason: int, now: datetime, actor: str) -> bool:
        """Mark revoked unless it already is; False means it was already revoked."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE certificates SET revoked_at = $2, revocation_reason = $3 "
                "WHERE id = $1 AND revoked_at IS NULL RETURNING account_id, order_id, serial",
                certificate_id,
                now,
                reason,
            )
            if row is None:
                return False
            await record_event(
                conn,
                "certificate.revoked",
                at=now,
                actor=actor,
                account_id=row["account_id"],
                order_id=row["order_id"],
                details={"serial": row["serial"], "reason": reason},
            )
        return True

    async def account_holds_valid_authzs(
        self, account_id: int, names: list[str], now: datetime
    ) -> bool:
        """Whether ``account_id`` has an unexpired valid authorization for every name."""
        held: int = await self._pool.fetchval(
            """SELECT count(DISTINCT n) FROM unnest($2::text[]) AS n
               WHERE EXISTS (SELECT 1 FROM authorizations a
                             WHERE a.account_id = $1 AND a.status = 'valid'
                               AND a.expires_at > $3
                               AND ((NOT a.wildcard AND a.identifier = n)
                                    OR (a.wildcard AND '*.' || a.identifier = n)))""",
            account_id,
            names,
            now,
        )
        return held == len(set(names))
