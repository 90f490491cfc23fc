"""Throwaway issuers and leaves, and storing a certificate as if issued: what the revocation,
ARI and key-compromise tests build on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.jws import JwsClient


@dataclass
class ThrowawayIssuer:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def key_identifier(self) -> bytes:
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return ski.digest


def make_issuer(cn: str = "Test Revocation Issuer", ski: bytes | None = None) -> ThrowawayIssuer:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    identifier = (
        x509.SubjectKeyIdentifier(ski)
        if ski is not None
        else x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(identifier, critical=False)
        .sign(key, hashes.SHA256())
    )
    return ThrowawayIssuer(key, cert)


@dataclass
class Leaf:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    names: list[str]

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def serial(self) -> str:
        return format(self.cert.serial_number, "x")


def make_leaf(
    issuer: ThrowawayIssuer,
    names: list[str],
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    serial: int | None = None,
    not_before: datetime | None = None,
    lifetime: timedelta = timedelta(days=90),
) -> Leaf:
    key = key or ec.generate_private_key(ec.SECP256R1())
    start = (not_before or datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime - timedelta(seconds=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier(issuer.key_identifier, None, None), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return Leaf(cert, key, names)


async def store_certificate(pool: asyncpg.Pool, account_id: int, leaf: Leaf) -> int:
    """A valid order for the leaf's names and its certificate row; returns the certificate id."""
    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        order_id = await conn.fetchval(
            """INSERT INTO orders (account_id, status, identifiers, expires_at, created_at,
                                   updated_at)
               VALUES ($1, 'valid', $2, $3, $4, $4) RETURNING id""",
            account_id,
            [{"type": "dns", "value": n} for n in leaf.names],
            now + timedelta(days=7),
            now,
        )
        cert_id: int = await conn.fetchval(
            """INSERT INTO certificates (order_id, account_id, serial, issuer, der, not_before,
                                         not_after, created_at)
               VALUES ($1, $2, $3, 'test-issuer', $4, $5, $6, $7) RETURNING id""",
            order_id,
            account_id,
            leaf.serial,
            leaf.der,
            leaf.cert.not_valid_before_utc,
            leaf.cert.not_valid_after_utc,
            now,
        )
    return cert_id


def account_id_of(client: JwsClient) -> int:
    assert client.kid is not None
    return int(client.kid.rsplit("/", 1)[1])
