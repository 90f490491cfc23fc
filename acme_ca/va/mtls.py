"""Mutual-TLS material and contexts for the primary <-> remote VA channel (BR 3.2.2.9).

The channel between the primary and each remote perspective is authenticated both ways and
encrypted.  ``acme-ca mpic-certs --out DIR --perspectives id1,id2`` writes a small dedicated
CA and the certificates signed by it:

* ``ca.pem`` / ``ca.key``: the channel CA (keep ``ca.key`` offline once the certificates exist;
  it is only needed to add a perspective or renew);
* ``primary.pem`` / ``primary.key``: the primary's client certificate (EKU clientAuth only);
* ``<id>.pem`` / ``<id>.key`` per remote: its server certificate (EKU serverAuth only), whose
  SAN is the perspective id (plus any extra DNS names given as ``id=name1+name2``).

The primary verifies a remote's certificate against the perspective id it expects
(``server_hostname=id``), not against the URL's host, so a certificate issued for one
perspective cannot answer for another.  A remote accepts only clients whose certificate
chains to ``ca.pem`` and carries clientAuth, so a remote's own server certificate cannot be
used to query another remote.  Nothing here is the CA's issuing hierarchy.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME: Final = timedelta(days=3650)
LEAF_LIFETIME: Final = timedelta(days=398)
PRIMARY_NAME: Final = "primary"
"""File stem of the primary's client certificate; never a perspective id."""

_ORG: Final = "acme_ca MPIC channel"


@dataclass(frozen=True)
class MpicMaterial:
    """Where :func:`create_mpic_material` wrote everything."""

    directory: Path
    ca_cert: Path
    primary_cert: Path
    primary_key: Path
    remotes: Mapping[str, tuple[Path, Path]]
    """Perspective id -> (certificate, key)."""


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
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _load_or_create_ca(
    directory: Path, now: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC key")
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("acme_ca MPIC channel CA"))
        .issuer_name(_name("acme_ca MPIC channel CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _leaf(
    directory: Path,
    stem: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    usage: x509.ObjectIdentifier,
    names: Sequence[str],
    now: datetime,
) -> tuple[Path, Path]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(stem))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + LEAF_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        general: list[x509.GeneralName] = []
        for name in names:
            try:
                general.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                general.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def create_mpic_material(
    directory: Path,
    perspectives: Sequence[str],
    *,
    extra_names: Mapping[str, Sequence[str]] | None = None,
    now: datetime | None = None,
) -> MpicMaterial:
    """Write (or extend) the channel CA, the primary's client certificate and one server
    certificate per perspective id.  An existing ``ca.pem``/``ca.key`` pair is reused, so a
    perspective can be added later; the leaf certificates asked for are (re)issued."""
    if PRIMARY_NAME in perspectives or "ca" in perspectives:
        raise ValueError("'primary' and 'ca' cannot be perspective ids")
    now = now or datetime.now(UTC)
    directory.mkdir(parents=True, exist_ok=True)
    ca = _load_or_create_ca(directory, now)
    primary_cert, primary_key = directory / "primary.pem", directory / "primary.key"
    if not (primary_cert.exists() and primary_key.exists()):
        _leaf(
            directory,
            PRIMARY_NAME,
            ca,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            names=(),
            now=now,
        )
    remotes = {
        pid: _leaf(
            directory,
            pid,
            ca,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            names=(pid, *(extra_names or {}).get(pid, ())),
            now=now,
        )
        for pid in perspectives
    }
    return MpicMaterial(directory, directory / "ca.pem", primary_cert, primary_key, remotes)


def server_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """A remote VA's listener: TLS 1.2+, and a client certificate chaining to ``client_ca``
    (with clientAuth) is required -- anyone else fails the handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=str(client_ca))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(cert: Path, key: Path, server_ca: Path) -> ssl.SSLContext:
    """The primary's side: presents its client certificate, trusts only ``server_ca`` and
    checks the remote's certificate names the perspective (``server_hostname``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=str(server_ca))
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context
