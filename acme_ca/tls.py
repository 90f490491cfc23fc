"""HTTPS material for the ACME listener when the operator configures none.

On first start a small local CA and a server certificate for ``localhost``, ``127.0.0.1``
and ``::1`` are written under ``home/tls``; clients trust ``home/tls/ca.pem``.  This is the
transport certificate of the ACME API, unrelated to the certificates the CA issues.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from acme_ca.config import Config
from acme_ca.localca import LocalCa, local_name

_CA_LIFETIME = timedelta(days=3650)
_SERVER_LIFETIME = timedelta(days=365)
_RENEW_BEFORE = timedelta(days=30)
_ORG = "acme_ca local"


def ensure_local_tls(tls_dir: Path, now: datetime | None = None) -> tuple[Path, Path, Path]:
    """Create (or renew when near expiry) the local CA and server certificate.

    Returns ``(chain_path, key_path, ca_path)``.
    """
    now = now or datetime.now(UTC)
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca_path, ca_key_path = tls_dir / "ca.pem", tls_dir / "ca.key"
    chain_path, key_path = tls_dir / "server.pem", tls_dir / "server.key"
    ca = LocalCa.load_or_create(
        ca_path,
        ca_key_path,
        local_name("acme_ca local TLS root", _ORG),
        now=now,
        lifetime=_CA_LIFETIME,
    )

    if chain_path.exists() and key_path.exists():
        current = x509.load_pem_x509_certificate(chain_path.read_bytes())
        if current.not_valid_after_utc - _RENEW_BEFORE > now and current.issuer == ca.cert.subject:
            return chain_path, key_path, ca_path

    cert, key = ca.issue(
        local_name("localhost", _ORG),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        names=("localhost", "127.0.0.1", "::1"),
        now=now,
        lifetime=_SERVER_LIFETIME,
    )
    ca.write_leaf(chain_path, key_path, cert, key, chain=True)
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
