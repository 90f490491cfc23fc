"""HTTPS material for the ACME listener when the operator configures none.

On first start a small local CA and a server certificate for ``localhost``, ``127.0.0.1``
and ``::1`` are written under ``home/tls``; clients trust ``home/tls/ca.pem``.  This is the
transport certificate of the ACME API, unrelated to the certificates the CA issues.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from acme_ca.config import Config

_SERVER_LIFETIME = timedelta(days=365)
_RENEW_BEFORE = timedelta(days=30)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme_ca local"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def ensure_local_tls(tls_dir: Path, now: datetime | None = None) -> tuple[Path, Path, Path]:
    """Create (or renew when near expiry) the local CA and server certificate.

    Returns ``(chain_path, key_path, ca_path)``.
    """
    now = now or datetime.now(UTC)
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca_path, ca_key_path = tls_dir / "ca.pem", tls_dir / "ca.key"
    chain_path, key_path = tls_dir / "server.pem", tls_dir / "server.key"

    if ca_path.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("acme_ca local TLS root"))
            .issuer_name(_name("acme_ca local TLS root"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(ca_key_path, _key_pem(ca_key))
        ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    if chain_path.exists() and key_path.exists():
        current = x509.load_pem_x509_certificate(chain_path.read_bytes())
        if current.not_valid_after_utc - _RENEW_BEFORE > now and current.issuer == ca_cert.subject:
            return chain_path, key_path, ca_path

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + _SERVER_LIFETIME)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    chain_path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    return chain_path, key_path, ca_path


def server_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The listener's TLS context, or None for ``plain_http``."""
    if config.plain_http:
        return None
    if config.tls_cert and config.tls_key:
        chain, key = config.tls_cert, config.tls_key
    else:
        chain, key, _ = ensure_local_tls(config.home / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(chain, key)
    return context
