"""The tls-alpn-01 responder: pebble-challtestsrv's TLS-ALPN-01 listener (RFC 8737).

A TLS listener offering only ``acme-tls/1``.  For each handshake it reads the SNI name, looks
up the key authorization ``/add-tlsalpn01`` stored for it, and answers with a self-signed
certificate built as Pebble's challenge server builds it: one P-256 key per listener, the
single dNSName SAN, the critical acmeIdentifier extension holding SHA-256 of the key
authorization.  Unlike Pebble's (whose certificate has zero validity dates) ours is valid
from a day before to a day after the store clock's now, since the VA refuses an expired
certificate.  An unknown or missing SNI name fails the handshake (unrecognized_name), as in
Pebble.

Python's ``ssl`` loads certificates from files only: each host's certificate and key are
handed to OpenSSL through an anonymous in-memory file (``memfd``), built once per (host, key
authorization) during the SNI callback (one signature, well under a millisecond; no disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from datetime import datetime, timedelta
from typing import Final

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from acme_ca.testsrv.store import ChallengeStore
from acme_ca.va.tlsalpn01 import ACME_IDENTIFIER_OID, ALPN_PROTOCOL, acme_identifier_value

HANDSHAKE_TIMEOUT: Final = 10.0
VALIDITY_MARGIN: Final = timedelta(days=1)
"""The challenge certificate is valid this long before and after the store clock's now."""
MAX_CACHED: Final = 1024
"""Contexts kept per listener; the cache is emptied past this (a test server's bound)."""

_log = structlog.get_logger(component=__name__)


def challenge_certificate(
    name: str,
    key_authorization: str,
    key: ec.EllipticCurvePrivateKey,
    now: datetime,
) -> x509.Certificate:
    """RFC 8737 §3's certificate: self-signed, SAN ``name`` only, critical acmeIdentifier."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACME challenge")])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - VALIDITY_MARGIN)
        .not_valid_after(now + VALIDITY_MARGIN)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(
                ACME_IDENTIFIER_OID, acme_identifier_value(key_authorization)
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


def server_context(certificate_pem: bytes | None = None) -> ssl.SSLContext:
    """A TLS server context offering ``acme-tls/1``, with the given cert+key PEM loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ALPN_PROTOCOL])
    if certificate_pem is not None:
        load_pem_chain(context, certificate_pem)
    return context


def load_pem_chain(context: ssl.SSLContext, pem: bytes) -> None:
    """``load_cert_chain`` from memory: the PEM (certificate then key) through a memfd."""
    fd = os.memfd_create("acme-tls-alpn", 0)
    try:
        os.write(fd, pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


class TlsAlpnResponder:
    """The listener; ``start`` binds (port 0: ephemeral), ``stop`` closes."""

    def __init__(self, store: ChallengeStore, host: str, port: int) -> None:
        self._store = store
        self._host = host
        self._port = port
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._key_pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._contexts: dict[tuple[str, str], ssl.SSLContext] = {}
        self._server: asyncio.Server | None = None
        self._context = server_context()
        self._context.sni_callback = self._select

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("tls-alpn-01 responder is not running")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve,
            self._host,
            self._port,
            ssl=self._context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    def _select(
        self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        """SNI: switch to the host's challenge certificate, or refuse the handshake."""
        host = (server_name or "").rstrip(".").lower()
        content = self._store.tlsalpn01_content(host) if host else None
        if content is None:
            _log.info("testsrv.tlsalpn01.unknown_name", server_name=server_name)
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        context = self._contexts.get((host, content))
        if context is None:
            cert = challenge_certificate(host, content, self._key, self._store.clock.now())
            pem = cert.public_bytes(serialization.Encoding.PEM) + self._key_pem
            context = server_context(pem)
            if len(self._contexts) >= MAX_CACHED:
                self._contexts.clear()
            self._contexts[(host, content)] = context
        connection.context = context
        _log.info("testsrv.tlsalpn01.served", server_name=host)
        return None

    async def _serve(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The handshake was the whole exchange (RFC 8737 §3: no application data)."""
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
