"""A small local CA for transport certificates: the ACME listener's own HTTPS material
(``tls.py``), the primary <-> remote VA mutual-TLS channel (``va/mtls.py``) and the
benchmark's Pebble (``integration/bench``).

Nothing here is the CA's issuing hierarchy: these are P-256 keys kept in files, for TLS
between parts the operator runs.  Every caller wants the same two shapes (a path-length-0
root, and an end-entity certificate with one extended key usage), so they are built once here.
The key-file writers (:func:`key_pem`, :func:`write_new`) also serve the issuing hierarchy's
software keys (``ca/signer.py``, ``ca/hierarchy.py``) and the audit archive key.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

BACKDATE: Final = timedelta(hours=1)
"""How far before ``now`` a certificate becomes valid, for clocks slightly behind ours."""


def replace_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temporary file, then a rename), with
    ``mode`` from the first byte: a reader polling for the file (a test waiting for
    ``tls/ca.pem``) never sees it empty or half written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private(path: Path, data: bytes) -> None:
    """Write key material readable by its owner only (mode 0600 from the first byte)."""
    replace_file(path, data, 0o600)


def write_new(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create ``path`` with ``mode`` from the first byte and write ``data`` durably (fsync).

    Never overwrites: an existing file raises :class:`FileExistsError`, so a key or a
    certificate once written is never replaced by another."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def key_pem(key: PrivateKeyTypes) -> bytes:
    """The unencrypted PKCS#8 PEM of ``key``."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def local_name(cn: str, organization: str | None = None) -> x509.Name:
    """``O=organization, CN=cn`` (or only the CN)."""
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if organization is not None:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def subject_alt_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """An IP address entry for each literal address in ``names``, a DNS name for the rest."""
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    return general


@dataclass(frozen=True)
class LocalCa:
    """A root certificate and its key, able to issue end-entity certificates."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, subject: x509.Name, *, now: datetime, lifetime: timedelta) -> LocalCa:
        """A fresh self-signed root (pathLen 0, keyCertSign and cRLSign)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> LocalCa:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{key_path} is not an EC key")
        return cls(cert, key)

    @classmethod
    def load_or_create(
        cls,
        cert_path: Path,
        key_path: Path,
        subject: x509.Name,
        *,
        now: datetime,
        lifetime: timedelta,
    ) -> LocalCa:
        """The root stored at the two paths, or a new one written there (key mode 0600)."""
        if cert_path.exists() and key_path.exists():
            return cls.load(cert_path, key_path)
        ca = cls.create(subject, now=now, lifetime=lifetime)
        write_private(key_path, key_pem(ca.key))
        replace_file(cert_path, cert_pem(ca.cert))
        return ca

    def issue(
        self,
        subject: x509.Name,
        *,
        usage: x509.ObjectIdentifier,
        names: Sequence[str],
        now: datetime,
        lifetime: timedelta,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A new key and an end-entity certificate for it: digitalSignature, the one
        extended key usage ``usage``, and ``names`` (if any) as its subjectAltName."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(subject_alt_names(names)), critical=False
            )
        return builder.sign(self.key, hashes.SHA256()), key

    def write_leaf(
        self,
        cert_path: Path,
        key_path: Path,
        cert: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        *,
        chain: bool = False,
    ) -> None:
        """Write an issued pair; with ``chain`` the root follows the certificate."""
        write_private(key_path, key_pem(key))
        replace_file(cert_path, cert_pem(cert) + (cert_pem(self.cert) if chain else b""))
