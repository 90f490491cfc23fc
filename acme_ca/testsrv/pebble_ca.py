"""Test mode's sources for Pebble's management endpoints, and Pebble's own listener for them.

The certificates and keys come from the test hierarchy's issuers.toml (read once at start);
certificate status from the database.  Chain 0 is the primary root's; chain N (N >= 1) is
the root's that the issuers' alternate chain N - 1 reaches (Root X1 through a
cross-certificate, or in Pebble's shape, :mod:`acme_ca.ca.hierarchy_chains`, that chain's own
root).  Keys are the software key files of test mode's generated hierarchy (test mode
refuses an HSM), handed out as Pebble hands out its throwaway keys.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from acme_ca.ca.issuers_file import IssuersFile, KeyRef, alternate_path, read_issuers_file
from acme_ca.config import Config
from acme_ca.config.base import split_host_port
from acme_ca.db.certificates import CertificateRecord, CertificateRepository
from acme_ca.db.pool import create_pool
from acme_ca.testsrv.ca_endpoints import (
    CaEndpoints,
    PemProvider,
    make_ca_management_app,
    static_pem,
)
from acme_ca.tls import server_ssl_context

log = structlog.get_logger(component="acme_ca.testsrv.pebble_ca")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.PEM)


def _key_pem(ref: KeyRef | None) -> bytes | None:
    if ref is None or ref.key_file is None:
        return None
    return ref.key_file.read_bytes()


def _unique(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    return list(dict.fromkeys(certs))


def _chains(issuers: IssuersFile) -> tuple[list[bytes], list[bytes], list[bytes], bytes]:
    """Roots, the intermediates of each chain (PEM, concatenated), root keys and the issuers'
    keys (concatenated, in the order of the intermediates).

    Chain 0 is every issuer's primary chain, up to ``root``; chain N (N >= 1) is every
    issuer's alternate chain N - 1, up to the root that signed its last certificate.  A
    chain's intermediates are the issuing CAs' certificates in it, then the certificates
    above them (nearest first): Pebble answers only the first, the one that signs."""
    ordered = sorted(issuers.issuers.values(), key=lambda e: e.name)
    paths = [[(e.certificate, *e.chain) for e in ordered]]
    count = min(len(e.alternate_chains) for e in ordered)
    for n in range(count):
        paths.append([alternate_path(e.certificate, e.alternate_chains[n]) for e in ordered])
    self_signed = {e.certificate.subject: e.certificate for e in issuers.roots.values()}
    self_signed = {k: v for k, v in self_signed.items() if v.subject == v.issuer}
    self_signed[issuers.root.subject] = issuers.root
    roots: list[x509.Certificate] = []
    intermediates: list[bytes] = []
    for chain in paths:
        root = self_signed.get(chain[0][-1].issuer)
        if root is None:
            break  # an alternate chain ending below a root issuers.toml does not hold
        roots.append(root)
        certs = _unique([path[0] for path in chain] + [c for path in chain for c in path[1:]])
        intermediates.append(b"".join(_pem(c) for c in certs))
    by_cert = {entry.certificate: entry.key for entry in issuers.roots.values()}
    root_keys = [_key_pem(by_cert.get(root)) or b"" for root in roots]
    issuer_keys = b"".join(_key_pem(e.key) or b"" for e in ordered)
    return [_pem(r) for r in roots], intermediates, root_keys, issuer_keys


def _indexed(items: list[bytes]) -> PemProvider:
    """Like :func:`static_pem`, but an empty item (a root whose key is not on disk) is a 404
    at its own index instead of shifting the ones after it."""

    async def provide(index: int) -> bytes | None:
        return (items[index] or None) if 0 <= index < len(items) else None

    return provide


def _go_time(at: datetime) -> str:
    """Go's ``time.Time.String()`` in UTC, as Pebble's RevokedAt: trailing zeros trimmed."""
    text = at.strftime("%Y-%m-%d %H:%M:%S")
    if at.microsecond:
        text += ("." + f"{at.microsecond:06d}").rstrip("0")
    return text + " +0000 UTC"


class _Certificates:
    """The database's certificates, opened on first use (a status query is rare in CI)."""

    def __init__(self, dsn: str | None) -> None:
        self._dsn = dsn
        self._repository: CertificateRepository | None = None
        self._close: Callable[[], Awaitable[None]] | None = None
        self._lock = asyncio.Lock()

    async def get(self, serial_hex: str) -> CertificateRecord | None:
        if self._dsn is None:
            return None
        async with self._lock:
            if self._repository is None:
                pool = await create_pool(self._dsn, max_size=2, acquire_timeout=10)
                self._repository, self._close = CertificateRepository(pool), pool.close
        return await self._repository.get_by_serial(serial_hex)

    async def aclose(self) -> None:
        close, self._close, self._repository = self._close, None, None
        if close is not None:
            await close()


@dataclass(frozen=True)
class PebbleCa:
    """The endpoints' sources and what must be closed after them."""

    endpoints: CaEndpoints
    certificates: _Certificates


async def pebble_ca(pki: Path, dsn: str | None) -> PebbleCa:
    """Read the hierarchy (in a thread: file I/O); certificate status comes from the
    certificates (not precertificates: what clients hold) in the database at ``dsn``."""
    issuers = await asyncio.to_thread(read_issuers_file, pki)
    roots, intermediates, root_keys, issuer_keys = await asyncio.to_thread(_chains, issuers)
    certificates = _Certificates(dsn)

    async def cert_status(serial: int) -> dict[str, object] | None:
        record = await certificates.get(format(serial, "x"))
        if record is None:
            return None
        cert = x509.load_der_x509_certificate(record.der)
        status: dict[str, object] = {
            "Status": "Revoked" if record.revoked_at is not None else "Valid",
            "Serial": format(serial, "x"),
            "Certificate": _pem(cert).decode(),
        }
        if record.revoked_at is not None:
            if record.revocation_reason is not None:
                status["Reason"] = record.revocation_reason
            status["RevokedAt"] = _go_time(record.revoked_at)
        return status

    endpoints = CaEndpoints(
        roots=static_pem(*roots),
        intermediates=static_pem(*intermediates),
        root_keys=_indexed(root_keys),
        intermediate_keys=static_pem(*([issuer_keys] * len(roots) if issuer_keys else [])),
        cert_status=cert_status,
    )
    return PebbleCa(endpoints, certificates)


@contextlib.asynccontextmanager
async def pebble_management_listener(config: Config, ca: PebbleCa) -> AsyncIterator[str | None]:
    """Pebble's management interface on its own listener (``management_listen``; HTTPS with
    the ACME listener's certificate, as Pebble; plain HTTP with ``--plain-http``); yields its
    base URL, or None when it is off.  Closes the certificate status pool at exit."""
    try:
        if config.management_listen == "off":
            yield None
            return
        ssl_context = await asyncio.to_thread(server_ssl_context, config)
        host, port = split_host_port(config.management_listen)
        runner = web.AppRunner(make_ca_management_app(ca.endpoints), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
            bound = runner.addresses[0][1]
            scheme = "https" if ssl_context is not None else "http"
            url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{bound}"
            log.info("testmode.management_listener", url=url)
            yield url
        finally:
            await runner.cleanup()
    finally:
        await ca.certificates.aclose()
