"""The CRL/OCSP test site: issuers, a status environment with its own listener, and pkilint
over what it serves."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from acme_ca.ca.hierarchy import init_hierarchy
from acme_ca.ca.issuers import IssuerSet, load_issuers
from acme_ca.ca.lint import CertificateLinter
from acme_ca.ca.settings import HierarchySettings, IssuerSettings
from acme_ca.clock import Clock, FixedClock
from acme_ca.config import Config
from acme_ca.db.certificates import CertificateRepository, RevocationOutcome
from acme_ca.db.status import StatusRepository
from acme_ca.status.crl import (
    CrlAuthority,
)
from acme_ca.status.server import create_status_app
from acme_ca.status.settings import StatusSettings
from acme_ca.status.updater import (
    StatusUpdater,
    close_authorities,
    issuer_authority,
    open_root_authorities,
)
from tests.fixtures import free_socket

REPO = Path(__file__).resolve().parents[2]


#: A public-looking name: pkilint flags internal names in the issuers' URLs.
STATUS = "http://pki.acme-ca-test.example.com"


#: Every issuing CA `acme-ca init` makes: the DV pair and the OV pair (issue 15).
ISSUERS = ("dv-rsa", "dv-ecc", "ov-rsa", "ov-ecc")


ROOTS = ("root-r1", "root-x1")


@dataclass
class StatusEnv:
    """Everything a status test needs: issuers with keys, the repository, a clock."""

    config: Config
    issuers: IssuerSet
    roots: list[CrlAuthority]
    repository: StatusRepository
    linter: CertificateLinter
    clock: FixedClock
    pool: asyncpg.Pool
    dsn: str
    account_id: int
    settings: StatusSettings

    def updater(self, clock: Clock | None = None, **changes: Any) -> StatusUpdater:
        return StatusUpdater(
            self.repository,
            self.issuers,
            self.linter,
            clock or self.clock,
            replace(self.settings, **changes),
            roots=self.roots,
        )

    async def add_certificate(
        self,
        issuer: str,
        *,
        serial: int | None = None,
        not_after: datetime | None = None,
        revoked_at: datetime | None = None,
        reason: int | None = None,
    ) -> tuple[int, str]:
        """A certificates row (the status room reads only its status columns)."""
        serial_hex = format(serial or secrets.randbits(127) | 1 << 120, "x")
        now = self.clock.now()
        row_id: int = await self.pool.fetchval(
            """INSERT INTO certificates (account_id, serial, issuer, der, not_before,
                                         not_after, revoked_at, revocation_reason, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $5) RETURNING id""",
            self.account_id,
            serial_hex,
            issuer,
            b"\x30\x00",
            now - timedelta(hours=1),
            not_after or now + timedelta(days=90),
            revoked_at,
            reason,
        )
        return row_id, serial_hex

    async def revoke(self, row_id: int, reason: int, at: datetime | None = None) -> None:
        """Revoke the way the RA does (with the NOTIFY)."""
        serial = await self.pool.fetchval("SELECT serial FROM certificates WHERE id = $1", row_id)
        outcome = await CertificateRepository(self.pool).revoke(
            serial, reason=reason, now=at or self.clock.now(), actor="test"
        )
        assert outcome is RevocationOutcome.REVOKED

    def authority(self, name: str) -> CrlAuthority:
        if name in ROOTS:
            return next(r for r in self.roots if r.name == name)
        return issuer_authority(self.issuers.by_name(name))


@dataclass
class StatusSite:
    base_url: str
    session: aiohttp.ClientSession


def spk_bits(certificate: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING contents, computed independently of the code under
    test: the X9.62 uncompressed point, or the PKCS#1 RSAPublicKey DER."""
    key = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert isinstance(key, rsa.RSAPublicKey)
    return key.public_bytes(Encoding.DER, PublicFormat.PKCS1)


T = TypeVar("T")


def run_in_thread(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine in its own loop: module fixtures may be set up inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, factory()).result()


def now_seconds() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def status_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A development hierarchy on software keys, made once per module."""
    home = tmp_path_factory.mktemp("status-home")
    config = replace(Config(), home=home, status_base_url=STATUS).validate()
    run_in_thread(lambda: init_hierarchy(HierarchySettings.from_config(config)))
    return config


@pytest.fixture
async def env(
    status_config: Config, linter: CertificateLinter, pool: asyncpg.Pool, dsn: str
) -> AsyncIterator[StatusEnv]:
    clock = FixedClock(now_seconds())
    issuers = await load_issuers(IssuerSettings.from_config(status_config), clock=clock)
    roots = await open_root_authorities(IssuerSettings.from_config(status_config))
    account_id = await pool.fetchval(
        "INSERT INTO accounts (key_thumbprint, jwk, status, created_at, updated_at) "
        "VALUES ($1, $2, 'valid', now(), now()) RETURNING id",
        secrets.token_bytes(32),
        {"kty": "EC"},
    )
    try:
        yield StatusEnv(
            config=status_config,
            issuers=issuers,
            roots=roots,
            repository=StatusRepository(pool),
            linter=linter,
            clock=clock,
            pool=pool,
            dsn=dsn,
            account_id=account_id,
            settings=StatusSettings.from_config(status_config),
        )
    finally:
        await close_authorities(roots)
        await issuers.aclose()


@pytest.fixture
async def status_site(env: StatusEnv) -> AsyncIterator[StatusSite]:
    """The key-less status listener on a free 127.0.0.1 port, on the same database."""
    sock = free_socket()
    runner = aiohttp.web.AppRunner(
        create_status_app(env.config.pki_path, env.dsn, clock=env.clock), access_log=None
    )
    await runner.setup()
    await aiohttp.web.SockSite(runner, sock).start()
    try:
        async with aiohttp.ClientSession() as session:
            yield StatusSite(f"http://127.0.0.1:{sock.getsockname()[1]}", session)
    finally:
        await runner.cleanup()
