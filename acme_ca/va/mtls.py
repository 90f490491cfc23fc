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

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from acme_ca.localca import LocalCa, local_name

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


def _leaf(
    directory: Path,
    stem: str,
    ca: LocalCa,
    *,
    usage: x509.ObjectIdentifier,
    names: Sequence[str],
    now: datetime,
) -> tuple[Path, Path]:
    cert, key = ca.issue(
        local_name(stem, _ORG), usage=usage, names=names, now=now, lifetime=LEAF_LIFETIME
    )
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    ca.write_leaf(cert_path, key_path, cert, key)
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
    ca = LocalCa.load_or_create(
        directory / "ca.pem",
        directory / "ca.key",
        local_name("acme_ca MPIC channel CA", _ORG),
        now=now,
        lifetime=CA_LIFETIME,
    )
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
