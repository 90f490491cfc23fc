"""Read-only lookups for operators (``acme-ca admin order|account|cert|search|certs``).

Everything an order left behind, as stored: the order, its authorizations and challenges
(with their validation records), the issuance job, precertificate and certificate (SCTs,
revocation), OCSP responses and CRLs of its serial, the requests that touched it and its
audit rows. The admin room (``acme_ca/admin/``) arranges these into a timeline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from acme_ca.acme.jsontypes import JsonValue
from acme_ca.db.audit_chain import AUDIT_ROWS, AuditChain, ChainRow, chain_row
from acme_ca.db.database import operator_pool
from acme_ca.db.pool import rows_by_id
from acme_ca.db.requests import RequestRow, requests_where
from acme_ca.db.settings import DatabaseSettings


@dataclass(frozen=True)
class OrderFacts:
    id: int
    account_id: int
    status: str
    identifiers: JsonValue
    profile: str | None
    replaces: str | None
    error: JsonValue
    expires_at: datetime
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ChallengeFacts:
    id: int
    type: str
    status: str
    validated_at: datetime | None
    error: JsonValue
    records: tuple[dict[str, JsonValue], ...]
    attempts: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class AuthzFacts:
    id: int
    identifier: str
    wildcard: bool
    status: str
    validated_at: datetime | None
    caa_checked_at: datetime | None
    expires_at: datetime
    created_at: datetime
    challenges: tuple[ChallengeFacts, ...]


@dataclass(frozen=True)
class JobFacts:
    id: int
    status: str
    step: str
    attempts: int
    deferrals: int
    issuer: str | None
    serial: str | None
    error: JsonValue
    ct_submitted_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class CertFacts:
    """A certificate, or a precertificate (``precertificate``: no final certificate row)."""

    id: int
    order_id: int | None
    account_id: int
    serial: str
    issuer: str
    precertificate: bool
    der: bytes
    chain_pem: str
    not_before: datetime
    not_after: datetime
    scts: tuple[dict[str, JsonValue], ...]
    revoked_at: datetime | None
    revocation_reason: int | None
    created_at: datetime
    spki_sha256: bytes | None


@dataclass(frozen=True)
class OcspFacts:
    hash_algorithm: str
    status: str
    revoked_at: datetime | None
    this_update: datetime
    next_update: datetime
    produced_at: datetime


@dataclass(frozen=True)
class CrlFacts:
    issuer: str
    number: int
    this_update: datetime
    next_update: datetime
    entries: int
    created_at: datetime
    der: bytes


@dataclass(frozen=True)
class AccountFacts:
    id: int
    status: str
    key_thumbprint: bytes
    contact: JsonValue
    eab_kid: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class OrderRecord:
    """Everything stored about one order."""

    order: OrderFacts
    authorizations: tuple[AuthzFacts, ...]
    job: JobFacts | None
    precertificate: CertFacts | None
    certificate: CertFacts | None
    ocsp: tuple[OcspFacts, ...]
    crls: tuple[CrlFacts, ...]
    requests: tuple[RequestRow, ...]
    audit: tuple[ChainRow, ...]


_CERT_COLUMNS = (
    "id, order_id, account_id, serial, issuer, der, not_before, not_after, revoked_at, "
    "revocation_reason, created_at, spki_sha256"
)
_PRECERTS = f"SELECT {_CERT_COLUMNS} FROM precertificates"  # noqa: S608 - constant names
_CERTS = f"SELECT {_CERT_COLUMNS}, chain_pem, scts FROM certificates"  # noqa: S608 - constant names


def _cert(r: asyncpg.Record, *, precertificate: bool) -> CertFacts:
    return CertFacts(
        id=r["id"],
        order_id=r["order_id"],
        account_id=r["account_id"],
        serial=r["serial"],
        issuer=r["issuer"],
        precertificate=precertificate,
        der=bytes(r["der"]),
        chain_pem="" if precertificate else r["chain_pem"],
        not_before=r["not_before"],
        not_after=r["not_after"],
        scts=() if precertificate else tuple(r["scts"] or ()),
        revoked_at=r["revoked_at"],
        revocation_reason=r["revocation_reason"],
        created_at=r["created_at"],
        spki_sha256=bytes(r["spki_sha256"]) if r["spki_sha256"] is not None else None,
    )


def normalize_serial(serial: str) -> str:
    """A serial in any hex spelling (colons, case, leading zeros) as stored: lower hex."""
    text = serial.replace(":", "").replace(" ", "").strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    return format(int(text, 16), "x")


class ForensicsRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def order_for_serial(self, serial: str) -> int | None:
        """The order of a certificate, precertificate or issuance job with ``serial``."""
        result: int | None = await self._pool.fetchval(
            """SELECT order_id FROM certificates WHERE serial = $1
               UNION ALL SELECT order_id FROM precertificates WHERE serial = $1
               UNION ALL SELECT order_id FROM issuance_jobs WHERE serial = $1 LIMIT 1""",
            normalize_serial(serial),
        )
        return result

    async def orders_for_request(self, request_id: str) -> list[int]:
        """Orders a request touched: named in its URL or bound by its handler, or the order
        of an object it named (authorization, challenge, certificate), or of its audit rows."""
        rows = await self._pool.fetch(
            """SELECT order_id FROM requests WHERE request_id = $1 AND order_id IS NOT NULL
               UNION SELECT oa.order_id FROM requests r
                   JOIN order_authorizations oa ON oa.authz_id = r.authz_id
                   WHERE r.request_id = $1
               UNION SELECT oa.order_id FROM requests r
                   JOIN challenges c ON c.id = r.challenge_id
                   JOIN order_authorizations oa ON oa.authz_id = c.authz_id
                   WHERE r.request_id = $1
               UNION SELECT c.order_id FROM requests r
                   JOIN certificates c ON c.id = r.certificate_id
                   WHERE r.request_id = $1 AND c.order_id IS NOT NULL
               UNION SELECT order_id FROM audit_events
                   WHERE request_id = $1 AND order_id IS NOT NULL
               UNION SELECT c.order_id FROM audit_events a
                   JOIN certificates c ON c.serial = a.details->>'serial'
                   WHERE a.request_id = $1 AND c.order_id IS NOT NULL
               ORDER BY 1""",
            request_id,
        )
        return [r["order_id"] for r in rows]

    async def order(self, order_id: int) -> OrderRecord | None:
        o = await self._pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
        if o is None:
            return None
        order = OrderFacts(
            id=o["id"],
            account_id=o["account_id"],
            status=o["status"],
            identifiers=o["identifiers"],
            profile=o["profile"],
            replaces=o["replaces"],
            error=o["error"],
            expires_at=o["expires_at"],
            created_at=o["created_at"],
            updated_at=o["updated_at"],
        )
        authzs = await self._authorizations(order_id)
        j = await self._pool.fetchrow("SELECT * FROM issuance_jobs WHERE order_id = $1", order_id)
        job = (
            JobFacts(
                id=j["id"],
                status=j["status"],
                step=j["step"],
                attempts=j["attempts"],
                deferrals=j["deferrals"],
                issuer=j["issuer"],
                serial=j["serial"],
                error=j["error"],
                ct_submitted_at=j["ct_submitted_at"],
                created_at=j["created_at"],
                updated_at=j["updated_at"],
            )
            if j is not None
            else None
        )
        p = await self._pool.fetchrow(_PRECERTS + " WHERE order_id = $1", order_id)
        c = await self._pool.fetchrow(
            _CERTS + " WHERE order_id = $1",
            order_id,
        )
        precert = _cert(p, precertificate=True) if p is not None else None
        cert = _cert(c, precertificate=False) if c is not None else None
        serial = cert.serial if cert else precert.serial if precert else None
        issued = cert or precert
        ocsp = await self.ocsp(issued.issuer, issued.serial) if issued else ()
        crls = await self.crls_after(issued) if issued else ()
        authz_ids = tuple(a.id for a in authzs)
        challenge_ids = tuple(ch.id for a in authzs for ch in a.challenges)
        audit = [
            chain_row(r)
            for r in await self._pool.fetch(
                AUDIT_ROWS
                + """ WHERE order_id = $1
                      OR (details ? 'authz_id' AND (details->>'authz_id')::bigint = ANY($2))
                      OR (details ? 'serial' AND details->>'serial' = $3)
                   ORDER BY id""",
                order_id,
                list(authz_ids),
                serial,
            )
        ]
        reqs = await requests_where(
            self._pool,
            order_id=order_id,
            authz_ids=authz_ids,
            challenge_ids=challenge_ids,
            certificate_id=cert.id if cert else None,
        )
        # Requests known only through their audit rows (revokeCert names no id in its URL).
        seen = {r.request_id for r in reqs}
        for request_id in sorted({a.request_id for a in audit if a.request_id} - seen):
            reqs.extend(await requests_where(self._pool, request_id=request_id))
        return OrderRecord(
            order=order,
            authorizations=authzs,
            job=job,
            precertificate=precert,
            certificate=cert,
            ocsp=ocsp,
            crls=crls,
            requests=tuple(sorted(reqs, key=lambda r: r.at)),  # stable: each batch is by (at, id)
            audit=tuple(audit),
        )

    async def _authorizations(self, order_id: int) -> tuple[AuthzFacts, ...]:
        authzs = await self._pool.fetch(
            """SELECT a.* FROM order_authorizations oa JOIN authorizations a ON a.id = oa.authz_id
               WHERE oa.order_id = $1 ORDER BY oa.position""",
            order_id,
        )
        chals = await self._pool.fetch(
            "SELECT * FROM challenges WHERE authz_id = ANY($1) ORDER BY id",
            [a["id"] for a in authzs],
        )
        return tuple(
            AuthzFacts(
                id=a["id"],
                identifier=a["identifier"],
                wildcard=a["wildcard"],
                status=a["status"],
                validated_at=a["validated_at"],
                caa_checked_at=a["caa_checked_at"],
                expires_at=a["expires_at"],
                created_at=a["created_at"],
                challenges=tuple(
                    ChallengeFacts(
                        id=c["id"],
                        type=c["type"],
                        status=c["status"],
                        validated_at=c["validated_at"],
                        error=c["error"],
                        records=tuple(c["validation_records"] or ()),
                        attempts=c["attempts"],
                        created_at=c["created_at"],
                        updated_at=c["updated_at"],
                    )
                    for c in chals
                    if c["authz_id"] == a["id"]
                ),
            )
            for a in authzs
        )

    async def ocsp(self, issuer: str, serial: str) -> tuple[OcspFacts, ...]:
        rows = await self._pool.fetch(
            """SELECT hash_algorithm, status, revoked_at, this_update, next_update, produced_at
               FROM ocsp_responses WHERE issuer = $1 AND serial = $2 ORDER BY hash_algorithm""",
            issuer,
            serial,
        )
        return tuple(OcspFacts(**dict(r)) for r in rows)

    async def crls_after(self, cert: CertFacts) -> tuple[CrlFacts, ...]:
        """The issuer's first CRL published after issuance and, for a revoked certificate, the
        first published after the revocation (the one that should list it). Publication
        time, not thisUpdate, which a CRL states in whole seconds."""
        found: list[CrlFacts] = []
        for since in (cert.created_at, cert.revoked_at):
            if since is None:
                continue
            r = await self._pool.fetchrow(
                """SELECT issuer, number, this_update, next_update, entries, created_at, der
                   FROM crls WHERE issuer = $1 AND created_at >= $2
                   ORDER BY number LIMIT 1""",
                cert.issuer,
                since,
            )
            if r is not None and all(f.number != r["number"] for f in found):
                found.append(CrlFacts(**{**dict(r), "der": bytes(r["der"])}))
        return tuple(found)

    async def certificate(self, serial: str) -> CertFacts | None:
        """The certificate with ``serial``, else the precertificate."""
        s = normalize_serial(serial)
        c = await self._pool.fetchrow(_CERTS + " WHERE serial = $1", s)
        if c is not None:
            return _cert(c, precertificate=False)
        p = await self._pool.fetchrow(_PRECERTS + " WHERE serial = $1", s)
        return _cert(p, precertificate=True) if p is not None else None

    async def account(self, account_id: int) -> AccountFacts | None:
        r = await self._pool.fetchrow(
            "SELECT id, status, key_thumbprint, contact, eab_kid, created_at, updated_at "
            "FROM accounts WHERE id = $1",
            account_id,
        )
        return (
            AccountFacts(**{**dict(r), "key_thumbprint": bytes(r["key_thumbprint"])}) if r else None
        )

    async def account_by_thumbprint(self, thumbprint: bytes) -> int | None:
        result: int | None = await self._pool.fetchval(
            "SELECT id FROM accounts WHERE key_thumbprint = $1", thumbprint
        )
        return result

    async def account_orders(self, account_id: int) -> list[OrderFacts]:
        rows = await self._pool.fetch(
            "SELECT * FROM orders WHERE account_id = $1 ORDER BY id", account_id
        )
        return [
            OrderFacts(
                **{
                    k: r[k]
                    for k in (
                        "id",
                        "account_id",
                        "status",
                        "identifiers",
                        "profile",
                        "replaces",
                        "error",
                        "expires_at",
                        "created_at",
                        "updated_at",
                    )
                }
            )
            for r in rows
        ]

    async def account_certificates(self, account_id: int) -> list[CertFacts]:
        rows = await self._pool.fetch(
            _CERTS + " WHERE account_id = $1 ORDER BY id",
            account_id,
        )
        return [_cert(r, precertificate=False) for r in rows]

    async def account_audit(self, account_id: int, limit: int = 200) -> list[ChainRow]:
        rows = await self._pool.fetch(
            AUDIT_ROWS + " WHERE account_id = $1 ORDER BY id DESC LIMIT $2",
            account_id,
            limit,
        )
        return [chain_row(r) for r in reversed(rows)]

    async def account_requests(self, account_id: int, limit: int = 200) -> list[RequestRow]:
        return (await requests_where(self._pool, account_id=account_id))[-limit:]

    async def orders_for_domain(self, domain: str, since: datetime | None) -> list[OrderFacts]:
        """Orders naming ``domain`` or a name under it (``*.domain`` included)."""
        rows = await self._pool.fetch(
            """SELECT * FROM orders o
               WHERE ($2::timestamptz IS NULL OR o.created_at >= $2)
                 AND EXISTS (SELECT 1 FROM jsonb_array_elements(o.identifiers) i
                             WHERE lower(i->>'value') = $1
                                OR lower(i->>'value') LIKE '%.' || $1)
               ORDER BY o.id""",
            domain.lower().rstrip("."),
            since,
        )
        return [
            OrderFacts(
                id=r["id"],
                account_id=r["account_id"],
                status=r["status"],
                identifiers=r["identifiers"],
                profile=r["profile"],
                replaces=r["replaces"],
                error=r["error"],
                expires_at=r["expires_at"],
                created_at=r["created_at"],
                updated_at=r["updated_at"],
            )
            for r in rows
        ]

    async def issued_since(
        self, since: datetime, until: datetime | None = None, *, batch: int = 1000
    ) -> AsyncIterator[CertFacts]:
        """Certificates stored in ``[since, until)``, by id, in batches."""
        query = (
            _CERTS
            + """ WHERE id > $1 AND created_at >= $2
                  AND ($3::timestamptz IS NULL OR created_at < $3)
                ORDER BY id LIMIT $4"""
        )
        async for r in rows_by_id(self._pool, query, since, until, batch=batch):
            yield _cert(r, precertificate=False)


@dataclass(frozen=True)
class AdminStorage:
    """What the admin commands read (and the audit commands maintain)."""

    forensics: ForensicsRepository
    audit: AuditChain


@asynccontextmanager
async def admin_storage(settings: DatabaseSettings) -> AsyncIterator[AdminStorage]:
    """The CA's database (the embedded one found or started), schema current, one connection."""
    async with operator_pool(settings) as pool:
        yield AdminStorage(ForensicsRepository(pool), AuditChain(pool))
