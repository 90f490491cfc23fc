"""Signing-worker test helpers: a development PKI config, ready orders inserted as the ACME
flow leaves them, CSRs, wrapped signers and lease expiry."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from acme_ca.ca.ct.settings import CtSettings
from acme_ca.ca.ct.submit import CertificateTransparency
from acme_ca.ca.hierarchy import init_hierarchy
from acme_ca.ca.issuance_profiles import profile_settings_factory
from acme_ca.ca.issuers import IssuerSet
from acme_ca.ca.lint import CertificateLinter
from acme_ca.ca.settings import HierarchySettings, IssuanceSettings
from acme_ca.ca.signer import HashName, Signer
from acme_ca.ca.worker import SigningWorker
from acme_ca.clock import SystemClock
from acme_ca.config import Config
from acme_ca.db.issuance import IssuanceRepository
from acme_ca.testsrv.ct_log import TestLogSpec
from acme_ca.va.records import Method, ValidationRecord

T = TypeVar("T")


#: An internal address as the status URL: pkilint reports the CRL/AIA URLs (ERROR).
INTERNAL_STATUS_URL = "http://127.0.0.1:14080"


#: Quick CT settings: logs in list order, short timeouts and backoff.
FAST = CtSettings(
    timeout=1.5,
    stagger=0.3,
    retry_initial=timedelta(milliseconds=100),
    retry_max=timedelta(milliseconds=500),
    deadline=timedelta(seconds=60),
    shuffle=False,
)


def run_in_thread(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine in its own loop: module fixtures may be set up inside a running loop."""
    with ThreadPoolExecutor(1) as executor:
        return executor.submit(asyncio.run, factory()).result()


def make_pki_config(home: Path, **changes: Any) -> Config:
    """A configuration whose ``pki_path`` gets a development hierarchy with software keys."""
    config = replace(Config(), home=home, **changes).validate()
    run_in_thread(lambda: init_hierarchy(HierarchySettings.from_config(config)))
    return config


def build_csr(
    names: Sequence[str],
    key_type: str = "ec",
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
) -> bytes:
    """DER CSR for ``names`` (CN = first name, SAN = all) with ``key`` or a fresh P-256 or
    RSA-2048 key."""
    if key is None and key_type == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    elif key is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


#: Builds the validation records stored for (name, method, validated at).
RecordsFor = Callable[[str, Method, datetime], list[dict[str, Any]]]


def primary_records(name: str, method: Method, at: datetime) -> list[dict[str, Any]]:
    """What the primary VA records for a passing validation of ``name`` at ``at``: the
    method's lookup and the CAA lookup (no remote perspectives)."""
    base = name.removeprefix("*.")
    query = (
        f"_acme-challenge.{base} TXT"
        if method == "dns-01"
        else f"http://{base}/.well-known/acme-challenge/token"
    )
    return [
        ValidationRecord(
            method=method,
            hostname=base,
            query=query,
            at=at,
            response="key authorization matched",
        ).to_json(),
        ValidationRecord(
            method="caa",
            hostname=base,
            query=f"{base} CAA",
            at=at,
            response="NOERROR: no CAA records",
        ).to_json(),
    ]


async def insert_authorizations(
    conn: asyncpg.Connection,
    account_id: int,
    order_id: int,
    names: Sequence[str],
    *,
    validated_at: datetime,
    expires_at: datetime,
    records: RecordsFor = primary_records,
    status: str = "valid",
) -> list[int]:
    """A valid authorization per name with one valid challenge (dns-01 for a wildcard,
    http-01 otherwise) carrying ``records(name, method, validated_at)``; linked to the order."""
    ids = []
    for position, name in enumerate(names):
        wildcard = name.startswith("*.")
        method: Method = "dns-01" if wildcard else "http-01"
        authz_id = await conn.fetchval(
            """INSERT INTO authorizations (account_id, identifier, wildcard, status, expires_at,
                                           validated_at, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $6, $6) RETURNING id""",
            account_id,
            name.removeprefix("*."),
            wildcard,
            status,
            expires_at,
            validated_at,
        )
        await conn.execute(
            """INSERT INTO challenges (authz_id, type, token, status, validated_at,
                                       validation_records, created_at, updated_at)
               VALUES ($1, $2, $3, 'valid', $4, $5, $4, $4)""",
            authz_id,
            method,
            os.urandom(16).hex(),
            validated_at,
            records(name, method, validated_at),
        )
        await conn.execute(
            "INSERT INTO order_authorizations (order_id, authz_id, position) VALUES ($1, $2, $3)",
            order_id,
            authz_id,
            position,
        )
        ids.append(authz_id)
    return ids


async def insert_ready_order(
    pool: asyncpg.Pool,
    names: Sequence[str],
    *,
    now: datetime | None = None,
    validated_at: datetime | None = None,
    records: RecordsFor = primary_records,
) -> tuple[int, int]:
    """An account and a ``ready`` order for ``names``, as the ACME flow leaves them: each name
    with a valid authorization, validated at ``validated_at`` (default: ``now``)."""
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        account_id = await conn.fetchval(
            """INSERT INTO accounts (key_thumbprint, jwk, status, tos_agreed_at,
                                     created_at, updated_at)
               VALUES ($1, $2, 'valid', $3, $3, $3) RETURNING id""",
            os.urandom(32),
            {"kty": "EC", "crv": "P-256", "x": os.urandom(8).hex(), "y": os.urandom(8).hex()},
            now,
        )
        order_id = await conn.fetchval(
            """INSERT INTO orders (account_id, status, identifiers, expires_at,
                                   created_at, updated_at)
               VALUES ($1, 'ready', $2, $3, $4, $4) RETURNING id""",
            account_id,
            [{"type": "dns", "value": n} for n in names],
            now + timedelta(days=7),
            now,
        )
        validated = validated_at or now
        await insert_authorizations(
            conn,
            account_id,
            order_id,
            names,
            validated_at=validated,
            expires_at=max(now, validated) + timedelta(days=30),
            records=records,
        )
    return account_id, order_id


async def job_of(pool: asyncpg.Pool, order_id: int) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM issuance_jobs WHERE order_id = $1", order_id)
    assert row is not None
    return row


async def order_of(pool: asyncpg.Pool, order_id: int) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
    assert row is not None
    return row


async def expire_lease(pool: asyncpg.Pool, order_id: int) -> None:
    """What the passing of the lease would do: the job's owner is presumed dead."""
    status = await pool.execute(
        "UPDATE issuance_jobs SET locked_until = now() - interval '1 second' "
        "WHERE order_id = $1 AND status = 'running'",
        order_id,
    )
    assert status == "UPDATE 1"


class WrappedSigner:
    """Delegates to a real signer; counts signatures; can die or stall on demand."""

    def __init__(self, inner: Signer) -> None:
        self._inner = inner
        self.calls = 0
        self.crash = False
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    @property
    def key_type(self) -> Any:
        return self._inner.key_type

    @property
    def public_key(self) -> Any:
        return self._inner.public_key

    def signature_algorithm_der(self, hash: HashName) -> bytes:
        return self._inner.signature_algorithm_der(hash)

    async def sign(self, data: bytes, hash: HashName) -> bytes:
        self.calls += 1
        self.entered.set()
        if self.crash:
            raise RuntimeError("the HSM went away")
        if self.gate is not None:
            await self.gate.wait()
        return await self._inner.sign(data, hash)

    async def aclose(self) -> None:
        """The wrapped signer belongs to the real IssuerSet, which closes it."""


def wrap_issuers(issuers: IssuerSet) -> tuple[IssuerSet, dict[str, WrappedSigner]]:
    """The same issuers, each signing through a :class:`WrappedSigner`."""
    wrapped = {name: WrappedSigner(i.signer) for name, i in issuers.issuers.items()}
    return (
        IssuerSet(
            issuers=MappingProxyType(
                {name: replace(i, signer=wrapped[name]) for name, i in issuers.issuers.items()}
            ),
            root=issuers.root,
            rsa_issuer=issuers.rsa_issuer,
            ecdsa_issuer=issuers.ecdsa_issuer,
            roots=issuers.roots,
        ),
        wrapped,
    )


def ct_log_specs() -> list[TestLogSpec]:
    """Three in-process test logs of three operators (one static-ct-api)."""
    return [
        TestLogSpec.generate("log A", "operator A"),
        TestLogSpec.generate("log B", "operator B"),
        TestLogSpec.generate("log C", "operator C", mode="static-ct-api"),
    ]


def signing_worker(
    pool: asyncpg.Pool,
    issuers: IssuerSet,
    linter: CertificateLinter,
    ct: CertificateTransparency,
    config: Config,
    *,
    jobs: IssuanceRepository | None = None,
    **options: Any,
) -> SigningWorker:
    """The signing worker as main/worker wires it, for a development hierarchy (no remote
    perspectives needed); ``jobs``: a repository of the test's own (counting, failing...)
    instead of the plain one; ``options`` are SigningWorker's (worker_id, lease, ...)."""
    return SigningWorker(
        jobs if jobs is not None else IssuanceRepository(pool),
        issuers,
        linter,
        SystemClock(),
        ct=ct,
        profile_for=profile_settings_factory(IssuanceSettings.from_config(config)),
        production=False,
        **options,
    )
