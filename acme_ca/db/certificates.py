"""Certificates and precertificates: found by serial; revoked by serial, one conditional update
per table in one transaction with its audit row; keys blocked and key-compromise sweeps queued
in the same transaction (``db/key_compromise.py`` runs the sweeps)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

from acme_ca.acme.jsontypes import JsonObject, JsonValue
from acme_ca.db.audit import record_event
from acme_ca.db.nonces import Redeemed, Redemption, fetch_redeeming
from acme_ca.db.status import REVOCATION_CHANNEL, revocation_payload

#: RFC 5280 CRLReason keyCompromise.
KEY_COMPROMISE: Final = 1


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
    #: A precertificate whose certificate was not stored (yet, or ever): no chains.
    precertificate: bool = False


def _record(row: asyncpg.Record, *, precertificate: bool = False) -> CertificateRecord:
    """A ``certificates`` row, or (``precertificate``) a ``precertificates`` row: no chains."""
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
        chain_pem="" if precertificate else row["chain_pem"],
        alternate_chains=[] if precertificate else list(row["alternate_chains"]),
        precertificate=precertificate,
    )


@dataclass(frozen=True)
class KeyBlock:
    """A key to put on ``blocked_keys`` together with a revocation (BR 6.1.1.3(4)).

    ``compromise`` (keyCompromise, BR 4.9.1.1 #3) also queues a key-compromise sweep in the
    same transaction: every unexpired certificate and precertificate with the key is revoked
    (``status/key_compromise.py``).  ``compromised_at`` is the earliest time the key is known
    compromised (BR 7.2.2 backdating); None means the time of the report.
    """

    spki_sha256: bytes
    reason: str
    source: str
    compromise: bool = False
    compromised_at: datetime | None = None


class RevocationOutcome(enum.StrEnum):
    REVOKED = "revoked"  #: the serial was not revoked before
    UPDATED = "updated"  #: revoked before; now keyCompromise, or with an earlier date
    UNCHANGED = "unchanged"  #: already revoked as asked (or no such serial)


@dataclass(frozen=True)
class RevocationChange:
    """What one revocation of a serial changed (certificate and precertificate alike)."""

    outcome: RevocationOutcome
    serial: str
    issuer: str
    account_id: int
    order_id: int | None
    revoked_at: datetime
    reason: int
    previous_revoked_at: datetime | None
    previous_reason: int | None


async def _block_key(conn: asyncpg.Connection, block: KeyBlock, now: datetime) -> int | None:
    """Block the key (if it is not yet) and, for a compromise, queue its sweep; returns the
    sweep's id (None without ``block.compromise``)."""
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
    if not block.compromise:
        return None
    return await queue_sweep(conn, block, now)


async def queue_sweep(conn: asyncpg.Connection, block: KeyBlock, now: datetime) -> int:
    """A queued sweep for the key: one already waiting that covers ``compromised_at``, or a
    new one (audited as ``key_compromise.sweep_queued``)."""
    compromised_at = block.compromised_at or now
    waiting: int | None = await conn.fetchval(
        "SELECT id FROM key_compromise_sweeps WHERE spki_sha256 = $1 AND status = 'queued' "
        "AND compromised_at <= $2 AND locked_until IS NULL ORDER BY id LIMIT 1",
        block.spki_sha256,
        compromised_at,
    )
    if waiting is not None:
        return waiting
    sweep_id: int = await conn.fetchval(
        """INSERT INTO key_compromise_sweeps (spki_sha256, compromised_at, requested_by, reason,
                                              status, run_after, created_at)
           VALUES ($1, $2, $3, $4, 'queued', $5, $5) RETURNING id""",
        block.spki_sha256,
        compromised_at,
        block.source,
        block.reason,
        now,
    )
    await record_event(
        conn,
        "key_compromise.sweep_queued",
        at=now,
        actor=block.source,
        details={
            "sweep_id": sweep_id,
            "spki_sha256": block.spki_sha256.hex(),
            "compromised_at": compromised_at.isoformat(),
        },
    )
    return sweep_id


# One statement per table a serial lives in. keyCompromise (1) also applies to a serial
# revoked before: its reason becomes 1 and its date moves back to GREATEST(at, notBefore) when
# that is earlier (BR 7.2.2: the date the key is known compromised; never before issuance).
_REVOKE_SQL: Final = {
    table: f"""
    WITH old AS (SELECT id, revoked_at, revocation_reason FROM {table}
                 WHERE serial = $1 FOR UPDATE)
    UPDATE {table} t SET
        revoked_at = CASE WHEN $3::smallint = 1
                          THEN LEAST(COALESCE(old.revoked_at, 'infinity'),
                                     GREATEST($2::timestamptz, t.not_before))
                          ELSE $2::timestamptz END,
        revocation_reason = $3::smallint
    FROM old
    WHERE t.id = old.id
      AND (old.revoked_at IS NULL
           OR ($3::smallint = 1
               AND (old.revocation_reason IS DISTINCT FROM 1
                    OR old.revoked_at > GREATEST($2::timestamptz, t.not_before))))
    RETURNING t.issuer, t.account_id, t.order_id, t.revoked_at, t.revocation_reason,
              old.revoked_at AS previous_revoked_at, old.revocation_reason AS previous_reason"""  # noqa: S608 - constant names
    for table in ("certificates", "precertificates")
}


async def revoke_serial(
    conn: asyncpg.Connection,
    serial: str,
    *,
    reason: int,
    at: datetime,
    now: datetime,
    actor: str,
    details: JsonObject | None = None,
) -> RevocationChange | None:
    """Revoke the serial (its certificate and its precertificate) inside the caller's
    transaction, with its audit row and the ``acme_ca_revocation`` NOTIFY; None when nothing
    changed.  ``at`` is the revocationDate to write (for keyCompromise, the date the key is
    known compromised), ``now`` the time of the audit row."""
    # The precertificate first: a certificate being stored for this serial holds its row
    # (FOR SHARE, the certificates_inherit_revocation trigger), so either that certificate is
    # committed before the certificates statement below runs, or it inherits this revocation.
    changed_precertificate = await conn.fetchrow(_REVOKE_SQL["precertificates"], serial, at, reason)
    changed_certificate = await conn.fetchrow(_REVOKE_SQL["certificates"], serial, at, reason)
    row = changed_certificate or changed_precertificate
    if row is None:
        return None
    change = RevocationChange(
        outcome=(
            RevocationOutcome.REVOKED
            if row["previous_revoked_at"] is None
            else RevocationOutcome.UPDATED
        ),
        serial=serial,
        issuer=row["issuer"],
        account_id=row["account_id"],
        order_id=row["order_id"],
        revoked_at=row["revoked_at"],
        reason=row["revocation_reason"],
        previous_revoked_at=row["previous_revoked_at"],
        previous_reason=row["previous_reason"],
    )
    audit: dict[str, JsonValue] = {"serial": serial, "reason": reason}
    if changed_certificate is None and not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM certificates WHERE serial = $1)", serial
    ):
        audit["precertificate"] = True  # a serial whose certificate was never stored
    if change.outcome is RevocationOutcome.UPDATED:
        audit |= {
            "previous_reason": change.previous_reason,
            "previous_revoked_at": _iso(change.previous_revoked_at),
            "revoked_at": change.revoked_at.isoformat(),
        }
    await record_event(
        conn,
        "certificate.revoked"
        if change.outcome is RevocationOutcome.REVOKED
        else "certificate.revocation_updated",
        at=now,
        actor=actor,
        account_id=change.account_id,
        order_id=change.order_id,
        details={**audit, **(details or {})},
    )
    # Delivered at commit: signing workers republish the issuer's CRL and this serial's OCSP
    # responses within seconds (CP 4.9.7: immediately).
    await conn.execute(
        "SELECT pg_notify($1, $2)", REVOCATION_CHANNEL, revocation_payload(change.issuer, serial)
    )
    return change


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class CertificateRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, certificate_id: int) -> CertificateRecord | None:
        row = await self._pool.fetchrow("SELECT * FROM certificates WHERE id = $1", certificate_id)
        return _record(row) if row else None

    async def get_redeeming(
        self, certificate_id: int, redemption: Redemption
    ) -> tuple[CertificateRecord | None, Redeemed]:
        """:meth:`get` with the request's nonce redeemed in the same round trip."""
        row, redeemed = await fetch_redeeming(
            self._pool, "SELECT * FROM certificates WHERE id = $1", (certificate_id,), redemption
        )
        return (_record(row) if row is not None else None), redeemed

    async def get_by_serial(self, serial: str) -> CertificateRecord | None:
        """The certificate with this serial (not a precertificate: what ACME clients hold)."""
        row = await self._pool.fetchrow("SELECT * FROM certificates WHERE serial = $1", serial)
        return _record(row) if row else None

    async def find_serial(self, serial: str) -> CertificateRecord | None:
        """The certificate with this serial or, if none was stored (yet, or ever: a failed
        order), its precertificate: every assigned serial (BR 7.1.2.9)."""
        row = await self._pool.fetchrow("SELECT * FROM certificates WHERE serial = $1", serial)
        if row is not None:
            return _record(row)
        row = await self._pool.fetchrow("SELECT * FROM precertificates WHERE serial = $1", serial)
        return _record(row, precertificate=True) if row else None

    async def revoke(
        self,
        serial: str,
        *,
        reason: int,
        now: datetime,
        actor: str,
        block: KeyBlock | None = None,
    ) -> RevocationOutcome:
        """Revoke the serial (certificate and precertificate) unless it already is.

        keyCompromise (1) also updates an earlier revocation of another reason (BR 7.2.2,
        ``UPDATED``).  ``block`` also puts the key on ``blocked_keys`` (and for a compromise
        queues its sweep), in the same transaction, whether or not anything was revoked.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            at = now
            if reason == KEY_COMPROMISE and block is not None and block.compromised_at:
                at = min(now, block.compromised_at)
            # The serial's rows are locked before any audit row is written: an audit row takes
            # the chain head's lock until commit (db/audit.record_event).
            change = await revoke_serial(conn, serial, reason=reason, at=at, now=now, actor=actor)
            if block is not None:  # a compromised key stays blocked even if already revoked
                await _block_key(conn, block, now)
        return change.outcome if change is not None else RevocationOutcome.UNCHANGED

    async def block_key(self, block: KeyBlock, now: datetime) -> int | None:
        """Block a key without revoking anything by hand (``acme-ca admin block-key``); for a
        compromise, the queued sweep's id."""
        async with self._pool.acquire() as conn, conn.transaction():
            return await _block_key(conn, block, now)

    async def unexpired_with_key(self, spki_sha256: bytes, now: datetime) -> int:
        """How many unexpired serials (certificates, or precertificates alone) use the key."""
        count: int = await self._pool.fetchval(
            """SELECT count(DISTINCT serial) FROM (
                   SELECT serial FROM certificates WHERE spki_sha256 = $1 AND not_after > $2
                   UNION ALL
                   SELECT serial FROM precertificates WHERE spki_sha256 = $1 AND not_after > $2
               ) s""",
            spki_sha256,
            now,
        )
        return count

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
        """Unexpired, unrevoked certificates (and precertificates without one) whose order
        names ``domain`` or a name under it (and any without an order); the caller confirms
        against the certificate's SANs."""
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
        precertificates = await self._pool.fetch(
            """SELECT p.* FROM precertificates p JOIN orders o ON o.id = p.order_id
               WHERE p.revoked_at IS NULL AND p.not_after > $2
                 AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.serial = p.serial)
                 AND EXISTS (
                      SELECT 1 FROM jsonb_array_elements(o.identifiers) AS i
                      WHERE lower(i->>'value') = $1
                         OR right(lower(i->>'value'), length($1) + 1) = '.' || $1)
               ORDER BY p.id""",
            domain,
            now,
        )
        return [_record(r) for r in rows] + [
            _record(r, precertificate=True) for r in precertificates
        ]

    async def unrevoked_for_accounts(
        self, account_ids: list[int], now: datetime
    ) -> list[CertificateRecord]:
        """Unexpired, unrevoked certificates (and precertificates without one) ordered by
        these accounts (``acme-ca admin revoke --org``; the caller picks the OV ones)."""
        rows = await self._pool.fetch(
            """SELECT * FROM certificates
               WHERE account_id = ANY($1::bigint[]) AND revoked_at IS NULL AND not_after > $2
               ORDER BY id""",
            account_ids,
            now,
        )
        precertificates = await self._pool.fetch(
            """SELECT p.* FROM precertificates p
               WHERE p.account_id = ANY($1::bigint[]) AND p.revoked_at IS NULL
                 AND p.not_after > $2
                 AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.serial = p.serial)
               ORDER BY p.id""",
            account_ids,
            now,
        )
        return [_record(r) for r in rows] + [
            _record(r, precertificate=True) for r in precertificates
        ]
