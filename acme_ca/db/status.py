"""Revocation status: CRL numbers, published CRLs, pre-produced OCSP responses, and the
``acme_ca_revocation`` notifications that tell signing workers to republish.

Signing workers (which hold the CA keys) write here; every ``acme-ca serve`` process reads
from here, so the status listener needs no key.  :meth:`StatusRepository.begin_crl` takes the
CRL Number and reads the revoked entries in one transaction under the ``crl_numbers`` row
lock, so a higher CRL Number never lists an older state than a lower one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from acme_ca.db.pool import create_pool

#: Channel :meth:`CertificateRepository.revoke` notifies (payload: JSON issuer and serial).
REVOCATION_CHANNEL: Final = "acme_ca_revocation"


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked, unexpired certificate: what a CRL entry is built from."""

    serial: str  #: lower-case hex, as in ``certificates.serial``
    revoked_at: datetime
    reason: int  #: RFC 5280 CRLReason; 0 (unspecified) is written without a reasonCode


@dataclass(frozen=True)
class RevokedEntries:
    """The entries a CRL must list, column by column, in the order the database gave them.

    Three tuples of str, datetime and int, not one object per entry: the garbage collector
    stops tracking a tuple of such values, while 100,000 entry objects would set off full
    collections, which hold the GIL and so stop the event loop even when the CRL is built in
    a worker thread.
    """

    serials: tuple[str, ...] = ()
    revoked_at: tuple[datetime, ...] = ()
    reasons: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not len(self.serials) == len(self.revoked_at) == len(self.reasons):
            raise ValueError("RevokedEntries columns of different lengths")

    @classmethod
    def of(cls, entries: Iterable[RevokedEntry]) -> RevokedEntries:
        listed = list(entries)
        return cls(
            tuple(e.serial for e in listed),
            tuple(e.revoked_at for e in listed),
            tuple(e.reason for e in listed),
        )

    def __len__(self) -> int:
        return len(self.serials)

    def __getitem__(self, index: int) -> RevokedEntry:
        return RevokedEntry(self.serials[index], self.revoked_at[index], self.reasons[index])

    def __iter__(self) -> Iterator[RevokedEntry]:
        for serial, at, reason in zip(self.serials, self.revoked_at, self.reasons, strict=True):
            yield RevokedEntry(serial, at, reason)


@dataclass(frozen=True)
class CrlDraft:
    """A freshly allocated CRL Number and the entries that CRL must list."""

    issuer: str
    number: int
    entries: RevokedEntries


@dataclass(frozen=True)
class SignedCrl:
    """A CRL as signed (``status/crl.py``), before :meth:`StatusRepository.store_crl`."""

    issuer: str
    number: int
    this_update: datetime
    next_update: datetime
    der: bytes
    entries: int
    entries_digest: bytes


@dataclass(frozen=True)
class CrlRecord(SignedCrl):
    """A stored CRL: the signed one and when it was stored."""

    created_at: datetime


@dataclass(frozen=True)
class CertificateStatus:
    """What an OCSP response about one certificate says."""

    issuer: str
    serial: str
    not_after: datetime
    revoked_at: datetime | None
    revocation_reason: int | None


@dataclass(frozen=True)
class OcspResponseRecord:
    issuer: str
    serial: str
    hash_algorithm: str  #: CertID hash: ``sha1`` or ``sha256``
    status: str  #: ``good`` or ``revoked``
    revocation_reason: int | None
    der: bytes
    this_update: datetime
    next_update: datetime
    produced_at: datetime
    #: The revocationTime stated (a changed one, BR 7.2.2 backdating, is re-signed).
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class RevocationNotice:
    """Payload of one ``acme_ca_revocation`` notification."""

    issuer: str
    serial: str


def revocation_payload(issuer: str, serial: str) -> str:
    return json.dumps({"issuer": issuer, "serial": serial}, separators=(",", ":"))


def parse_revocation_payload(payload: str) -> RevocationNotice | None:
    """The notice in ``payload``, or None for anything else (a hand-sent NOTIFY)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    issuer, serial = data.get("issuer"), data.get("serial")
    if not isinstance(issuer, str) or not isinstance(serial, str):
        return None
    return RevocationNotice(issuer, serial)


def _crl(row: asyncpg.Record) -> CrlRecord:
    return CrlRecord(
        issuer=row["issuer"],
        number=row["number"],
        this_update=row["this_update"],
        next_update=row["next_update"],
        der=bytes(row["der"]),
        entries=row["entries"],
        entries_digest=bytes(row["entries_digest"]),
        created_at=row["created_at"],
    )


def _status(row: asyncpg.Record) -> CertificateStatus:
    return CertificateStatus(
        issuer=row["issuer"],
        serial=row["serial"],
        not_after=row["not_after"],
        revoked_at=row["revoked_at"],
        revocation_reason=row["revocation_reason"],
    )


def _ocsp(row: asyncpg.Record) -> OcspResponseRecord:
    return OcspResponseRecord(
        issuer=row["issuer"],
        serial=row["serial"],
        hash_algorithm=row["hash_algorithm"],
        status=row["status"],
        revocation_reason=row["revocation_reason"],
        der=bytes(row["der"]),
        this_update=row["this_update"],
        next_update=row["next_update"],
        produced_at=row["produced_at"],
        revoked_at=row["revoked_at"],
    )


# Certificates and precertificates whose certificate was never stored (the
# ``certificate_statuses`` view): a revoked serial is listed whichever it is (BR 7.1.2.9).
#: Entries in numeric serial order (lower-case hex: shorter first, then by text), the order a
#: CRL lists them in, so sorting them again in Python is one linear pass.  Each row holds
#: 10,000 entries as three parallel arrays: a CRL may list 100,000 entries; one Record per
#: entry would be 100,000 objects for the garbage collector to walk, and one row of all would
#: be decoded on the event loop in one go.
_ENTRIES_SQL: Final = """
    WITH e AS (
        SELECT serial, revoked_at, coalesce(revocation_reason, 0) AS reason,
               row_number() OVER (ORDER BY length(ltrim(serial, '0')),
                                           ltrim(serial, '0') COLLATE "C") - 1 AS n
        FROM certificate_statuses
        WHERE issuer = $1 AND revoked_at IS NOT NULL AND not_after > $2)
    SELECT array_agg(serial ORDER BY n) AS serials,
           array_agg(revoked_at ORDER BY n) AS revoked_at,
           array_agg(reason ORDER BY n) AS reasons
    FROM e GROUP BY n / 10000 ORDER BY n / 10000"""


def _entries(rows: Sequence[asyncpg.Record]) -> RevokedEntries:
    serials: list[str] = []
    revoked_at: list[datetime] = []
    reasons: list[int] = []
    for row in rows:
        serials.extend(row["serials"])
        revoked_at.extend(row["revoked_at"])
        reasons.extend(row["reasons"])
    return RevokedEntries(tuple(serials), tuple(revoked_at), tuple(reasons))


class RevocationListener:
    """A pooled connection LISTENing on :data:`REVOCATION_CHANNEL`; :meth:`aclose` returns it."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        conn: asyncpg.Connection,
        handler: Callable[[Any, Any, Any, Any], None],
    ) -> None:
        self._pool = pool
        self._conn = conn
        self._handler = handler
        self._closed = False

    @property
    def alive(self) -> bool:
        """False once the connection broke (database restart): listen again.  The pool takes
        a broken connection's proxy back, after which asking it anything raises."""
        if self._closed:
            return False
        try:
            return not self._conn.is_closed()
        except asyncpg.InterfaceError:
            return False

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            await self._conn.remove_listener(REVOCATION_CHANNEL, self._handler)
        with contextlib.suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            await self._pool.release(self._conn)


class StatusRepository:
    """CRLs, OCSP responses and the revocation facts they are built from."""

    def __init__(self, pool: asyncpg.Pool, *, owns_pool: bool = False) -> None:
        self._pool = pool
        self._owns_pool = owns_pool

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool it queries (its use is reported in the metrics)."""
        return self._pool

    @classmethod
    async def open(cls, dsn: str, *, max_size: int = 4) -> StatusRepository:
        """A repository on its own pool (the key-less status listener); :meth:`close` it."""
        return cls(await create_pool(dsn, max_size=max_size), owns_pool=True)

    async def close(self) -> None:
        if self._owns_pool:
            await self._pool.close()

    # ------------------------------------------------------------------ CRLs

    async def next_crl_number(self, issuer: str) -> int:
        """A CRL Number above every one handed out for ``issuer`` before."""
        async with self._pool.acquire() as conn:
            return await self._allocate(conn, issuer)

    @staticmethod
    async def _allocate(conn: asyncpg.Connection, issuer: str) -> int:
        # Seeded from the CRLs already stored, should the counter row ever be lost.
        number: int = await conn.fetchval(
            """INSERT INTO crl_numbers (issuer, last_number)
               VALUES ($1, COALESCE((SELECT max(number) FROM crls WHERE issuer = $1), 0) + 1)
               ON CONFLICT (issuer) DO UPDATE SET last_number = crl_numbers.last_number + 1
               RETURNING last_number""",
            issuer,
        )
        return number

    async def begin_crl(self, issuer: str, now: datetime) -> CrlDraft:
        """Allocate the next CRL Number and read the entries, in one transaction.

        The entries are read after the number's row lock is taken, so of two drafts the one
        with the higher number never sees fewer revocations.  Entries stay until the
        certificate expires (BR 4.9.7 / 7.2.2).
        """
        async with self._pool.acquire() as conn, conn.transaction():
            number = await self._allocate(conn, issuer)
            rows = await conn.fetch(_ENTRIES_SQL, issuer, now)
        return CrlDraft(issuer, number, _entries(rows))

    async def revoked_entries(self, issuer: str, now: datetime) -> RevokedEntries:
        """The entries a CRL for ``issuer`` built at ``now`` must list."""
        return _entries(await self._pool.fetch(_ENTRIES_SQL, issuer, now))

    async def store_crl(self, crl: CrlRecord) -> None:
        await self._pool.execute(
            """INSERT INTO crls (issuer, number, this_update, next_update, der, entries,
                                 entries_digest, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            crl.issuer,
            crl.number,
            crl.this_update,
            crl.next_update,
            crl.der,
            crl.entries,
            crl.entries_digest,
            crl.created_at,
        )

    async def latest_crl(self, issuer: str) -> CrlRecord | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM crls WHERE issuer = $1 ORDER BY number DESC LIMIT 1", issuer
        )
        return _crl(row) if row else None

    async def latest_crls(self) -> dict[str, CrlRecord]:
        """The latest CRL of every issuer that has one."""
        rows = await self._pool.fetch(
            "SELECT DISTINCT ON (issuer) * FROM crls ORDER BY issuer, number DESC"
        )
        return {row["issuer"]: _crl(row) for row in rows}

    async def crl_history(self, issuer: str) -> list[CrlRecord]:
        """Every CRL published for ``issuer``, newest first."""
        rows = await self._pool.fetch(
            "SELECT * FROM crls WHERE issuer = $1 ORDER BY number DESC", issuer
        )
        return [_crl(row) for row in rows]

    # ------------------------------------------------------------------ OCSP

    async def certificate_status(self, issuer: str, serial: str) -> CertificateStatus | None:
        """The status of the certificate with this serial or, when none is stored (yet, or
        ever), of its precertificate (BR 7.1.2.9: a precertificate's serial counts as issued
        and is revocable; see the ``certificate_statuses`` view in schema.sql)."""
        row = await self._pool.fetchrow(
            "SELECT * FROM certificate_statuses WHERE issuer = $1 AND serial = $2",
            issuer,
            serial,
        )
        return _status(row) if row else None

    async def certificates_needing_ocsp(
        self,
        issuers: Sequence[str],
        hash_algorithms: Sequence[str],
        *,
        now: datetime,
        fresh_after: datetime,
        limit: int = 500,
    ) -> list[CertificateStatus]:
        """Unexpired certificates (and precertificates whose certificate does not exist yet)
        of ``issuers`` lacking, for some hash algorithm, a response produced after
        ``fresh_after`` that states their current status, reason and revocation time."""
        rows = await self._pool.fetch(
            """SELECT c.issuer, c.serial, c.not_after, c.revoked_at, c.revocation_reason
               FROM certificate_statuses c
               WHERE c.issuer = ANY($1::text[]) AND c.not_after > $3
                 AND (SELECT count(*) FROM ocsp_responses r
                      WHERE r.issuer = c.issuer AND r.serial = c.serial
                        AND r.hash_algorithm = ANY($2::text[])
                        AND r.this_update > $4 AND r.next_update > $3
                        AND r.status = CASE WHEN c.revoked_at IS NULL
                                            THEN 'good' ELSE 'revoked' END
                        AND r.revocation_reason IS NOT DISTINCT FROM
                            (CASE WHEN c.revoked_at IS NULL
                                  THEN NULL ELSE coalesce(c.revocation_reason, 0) END)
                        AND r.revoked_at IS NOT DISTINCT FROM c.revoked_at
                     ) < cardinality($2::text[])
               ORDER BY c.kind, c.id
               LIMIT $5""",
            list(issuers),
            list(hash_algorithms),
            now,
            fresh_after,
            limit,
        )
        return [_status(row) for row in rows]

    async def store_ocsp_response(self, response: OcspResponseRecord) -> bool:
        """Keep ``response`` as the current one; False if a newer one, or a revoked one
        where this is good, is already stored (a revocation is never undone)."""
        return bool(await self.store_ocsp_responses([response]))

    async def store_ocsp_responses(self, responses: Sequence[OcspResponseRecord]) -> set[str]:
        """:meth:`store_ocsp_response` for a certificate's responses (one per CertID hash
        algorithm) in one statement; returns the hash algorithms of those stored."""
        rows = await self._pool.fetch(
            """INSERT INTO ocsp_responses (issuer, serial, hash_algorithm, status,
                                           revocation_reason, der, this_update, next_update,
                                           produced_at, revoked_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                    $5::smallint[], $6::bytea[], $7::timestamptz[],
                                    $8::timestamptz[], $9::timestamptz[], $10::timestamptz[])
               ON CONFLICT (issuer, serial, hash_algorithm) DO UPDATE SET
                   status = EXCLUDED.status, revocation_reason = EXCLUDED.revocation_reason,
                   der = EXCLUDED.der, this_update = EXCLUDED.this_update,
                   next_update = EXCLUDED.next_update, produced_at = EXCLUDED.produced_at,
                   revoked_at = EXCLUDED.revoked_at
               WHERE ocsp_responses.produced_at <= EXCLUDED.produced_at
                 AND NOT (ocsp_responses.status = 'revoked' AND EXCLUDED.status = 'good')
               RETURNING hash_algorithm""",
            [r.issuer for r in responses],
            [r.serial for r in responses],
            [r.hash_algorithm for r in responses],
            [r.status for r in responses],
            [r.revocation_reason for r in responses],
            [r.der for r in responses],
            [r.this_update for r in responses],
            [r.next_update for r in responses],
            [r.produced_at for r in responses],
            [r.revoked_at for r in responses],
        )
        return {r["hash_algorithm"] for r in rows}

    async def get_ocsp_response(
        self, issuer: str, serial: str, hash_algorithm: str
    ) -> OcspResponseRecord | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM ocsp_responses "
            "WHERE issuer = $1 AND serial = $2 AND hash_algorithm = $3",
            issuer,
            serial,
            hash_algorithm,
        )
        return _ocsp(row) if row else None

    # ------------------------------------------------------------------ notifications

    async def listen_revocations(
        self, callback: Callable[[RevocationNotice | None], None]
    ) -> RevocationListener:
        """Call ``callback`` for every revocation committed from now on (None for a
        notification whose payload is not ours); holds one pooled connection."""

        def handler(_conn: Any, _pid: Any, _channel: Any, payload: Any) -> None:
            callback(parse_revocation_payload(str(payload)))

        conn = await self._pool.acquire()
        try:
            await conn.add_listener(REVOCATION_CHANNEL, handler)
        except BaseException:
            await self._pool.release(conn)
            raise
        return RevocationListener(self._pool, conn, handler)
