"""Certificates: issued ones are found by serial; revocation is one conditional update."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from acme_ca.db.audit import record_event
from acme_ca.db.status import REVOCATION_CHANNEL, revocation_payload


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


@dataclass(frozen=True)
class KeyBlock:
    """A key to put on ``blocked_keys`` together with a revocation (BR 6.1.1.3(4))."""

    spki_sha256: bytes
    reason: str
    source: str


async def _block_key(conn: asyncpg.Connection, block: KeyBlock, now: datetime) -> None:
    added = await conn.fetchval(
        "INSERT INTO blocked_keys (spki_sha256, reason, added_at, source) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
        block.spki_sha256,
        block.reason,
        now,
        block.source,
    )
    if added is not None:
        await record_event(
            conn,
            "key.blocked",
            at=now,
            actor=block.source,
            details={"spki_sha256": block.spki_sha256.hex(), "reason": block.reason},
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

    async def revoke(
        self,
        certificate_id: int,
        *,
        reason: int,
        now: datetime,
        actor: str,
        block: KeyBlock | None = None,
    ) -> bool:
        """Mark revoked unless it already is; False means it was already revoked.

        ``block`` also puts the certificate's key on ``blocked_keys``, in the same transaction
        and whether or not the certificate was already revoked.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            if block is not None:  # a compromised key stays blocked even if already revoked
                await _block_key(conn, block, now)
            row = await conn.fetchrow(
                "UPDATE certificates SET revoked_at = $2, revocation_reason = $3 "
                "WHERE id = $1 AND revoked_at IS NULL "
                "RETURNING account_id, order_id, serial, issuer",
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
            # Delivered at commit: signing workers republish the issuer's CRL and this
            # certificate's OCSP response within seconds (CP 4.9.7: immediately).
            await conn.execute(
                "SELECT pg_notify($1, $2)",
                REVOCATION_CHANNEL,
                revocation_payload(row["issuer"], row["serial"]),
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

    async def unrevoked_candidates_for_domain(
        self, domain: str, now: datetime
    ) -> list[CertificateRecord]:
        """Unexpired, unrevoked certificates whose order names ``domain`` or a name under it
        (and any without an order); the caller confirms against the certificate's SANs."""
        rows = await self._pool.fetch(
            """SELECT c.* FROM certificates c LEFT JOIN orders o ON o.id = c.order_id
               WHERE c.revoked_at IS NULL AND c.not_after > $2
                 AND (o.id IS NULL OR EXISTS (
                      SELECT 1 FROM jsonb_array_elements(o.identifiers) AS i
                      WHERE lower(i->>'value') = $1
                         OR right(lower(i->>'value'), length($1) + 1) = '.' || $1))
               ORDER BY c.id""",
            domain,
            now,
        )
        return [_record(r) for r in rows]
