"""tls-alpn-01 validation (RFC 8737, BR 3.2.2.4.20 "TLS Using ALPN").

The VA resolves the applied-for FQDN (never a wildcard: the method's Wildcard column is
empty; SC-101: no pruning, no CNAME substitution), keeps the addresses the address policy
allows (the same policy and code as http-01, :mod:`acme_ca.va.addresses`), and opens a TLS
connection to ``tlsalpn01_port`` (443; tests move it) offering only the ALPN protocol
``acme-tls/1`` with SNI set to the name (RFC 8737 §3).  The first IPv6 address is tried
first, the first IPv4 one on a connection or TLS failure; each attempt is a record.

The certificate the server presents is accepted only when (RFC 8737 §3, BR 3.2.2.4.20):

* the server selected ``acme-tls/1`` (else ``unauthorized``: the ALPN was not negotiated);
* it is self-signed (issuer = subject, and its own key verifies its signature);
* it is not a CA certificate (basicConstraints cA) and is valid now (notBefore..notAfter);
* its subjectAltName holds exactly one entry, a dNSName equal to the FQDN;
* it carries the acmeIdentifier extension (id-pe 31, 1.3.6.1.5.5.7.1.31), critical, whose
  value is the DER OCTET STRING of SHA-256(key authorization), and no extension twice.

Every deviation is an ``unauthorized`` problem naming what was wrong; a refused or timed-out
connection is ``connection``, a failed handshake ``tls``, a failed lookup ``dns``.  The
certificate itself is never trusted for anything else (it is not chain-validated).

``observed`` is the acmeIdentifier digest (hex) the server presented: remote perspectives
repeat the whole check and must present the same digest (BR 3.2.2.9).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Final

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from acme_ca.acme import problems
from acme_ca.acme.problems import Problem
from acme_ca.va.addresses import AddressCheck, AddressesRefused, host_port, unverified_tls_context
from acme_ca.va.methods import DcvMethod, WildcardNotAllowed, authorization_domain_name
from acme_ca.va.records import CheckResult, KeyAuthorizationCheck, ValidationRecord, truncate
from acme_ca.va.resolver import IPAddress

METHOD: Final = DcvMethod(
    label="tls-alpn-01",
    section="3.2.2.4.20",
    title="TLS Using ALPN",
    wildcard=False,
    prune=False,
    cname=False,
)
ALPN_PROTOCOL: Final = "acme-tls/1"
"""RFC 8737 §6.2: the ALPN protocol of the validation handshake."""
ACME_IDENTIFIER_OID: Final = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
"""RFC 8737 §6.1: id-pe-acmeIdentifier."""
TLS_PORT: Final = 443
DEFAULT_TIMEOUT: Final = 10.0
"""Seconds for the whole check: the lookup and every connection attempt."""
ATTEMPT_TIMEOUT: Final = 5.0
"""Seconds for one connection and handshake, so an IPv4 fallback still gets its turn."""
_OCTET_STRING_32: Final = b"\x04\x20"
"""DER header of an OCTET STRING of 32 bytes: the acmeIdentifier value's only shape."""

_log = structlog.get_logger(component=__name__)


def acme_identifier_digest(key_authorization: str) -> bytes:
    """RFC 8737 §3: SHA-256 of the key authorization (the extension holds it as an OCTET
    STRING)."""
    return hashlib.sha256(key_authorization.encode("ascii")).digest()


def acme_identifier_value(key_authorization: str) -> bytes:
    """The DER extension value a challenge certificate carries: OCTET STRING (SHA-256)."""
    return _OCTET_STRING_32 + acme_identifier_digest(key_authorization)


def client_context() -> ssl.SSLContext:
    """TLS 1.2+ offering only ``acme-tls/1``; the self-signed certificate is judged by
    :func:`judge_certificate`, not by chain validation.  One per process."""
    return unverified_tls_context((ALPN_PROTOCOL,))


@dataclass(frozen=True)
class Handshake:
    """What one validation handshake produced: the server's choice and its certificate."""

    server: str
    alpn: str | None
    certificate: bytes | None


def describe(der: bytes) -> str:
    """The certificate as the record shows it: subject, SANs, validity, acmeIdentifier."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        parts = [f"subject {certificate.subject.rfc4514_string()!r}"]
    except ValueError:
        return f"certificate (unparseable, {len(der)} bytes)"
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        parts.append("SAN [" + ", ".join(_general_name(n) for n in san.value) + "]")
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
        parts.append("no SAN")
    parts.append(
        f"valid {certificate.not_valid_before_utc.isoformat()}.."
        f"{certificate.not_valid_after_utc.isoformat()}"
    )
    try:
        ext = certificate.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
        raw = ext.value.public_bytes()
        parts.append(
            f"acmeIdentifier {raw.hex()}" + (" (critical)" if ext.critical else " (not critical)")
        )
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
        parts.append("no acmeIdentifier")
    return "certificate " + "; ".join(parts)


def _general_name(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    return f"{type(name).__name__}:{name.value}"


def judge_certificate(
    der: bytes, name: str, key_authorization: str, now: datetime
) -> tuple[str | None, str | None]:
    """(why the certificate does not prove control of ``name`` or None, the acmeIdentifier
    digest it carries as hex or None).  Pure: the RFC 8737 §3 and BR 3.2.2.4.20 rules."""
    try:
        cert = x509.load_der_x509_certificate(der)
        extensions = cert.extensions
    except x509.DuplicateExtension as exc:
        return f"the certificate carries extension {exc.oid.dotted_string} twice", None
    except ValueError as exc:
        return f"the certificate cannot be parsed: {exc}", None
    try:
        identifier: x509.Extension[x509.ExtensionType] | None = extensions.get_extension_for_oid(
            ACME_IDENTIFIER_OID
        )
    except x509.ExtensionNotFound:
        identifier = None
    raw = identifier.value.public_bytes() if identifier is not None else b""
    observed = raw[2:].hex() if len(raw) == 34 and raw.startswith(_OCTET_STRING_32) else None
    reason = (
        _issuer_problem(cert, extensions, now)
        or _san_problem(extensions, name)
        or _identifier_problem(identifier, raw, observed, key_authorization)
    )
    return reason, observed


def _issuer_problem(
    cert: x509.Certificate, extensions: x509.Extensions, now: datetime
) -> str | None:
    """Self-signed, not a CA, valid at ``now``."""
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return "the certificate is not self-signed"
    try:
        if extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "the certificate is a CA certificate (basicConstraints cA)"
    except x509.ExtensionNotFound:
        pass
    if now < cert.not_valid_before_utc:
        return f"the certificate is not valid before {cert.not_valid_before_utc.isoformat()}"
    if now > cert.not_valid_after_utc:
        return f"the certificate expired at {cert.not_valid_after_utc.isoformat()}"
    return None


def _san_problem(extensions: x509.Extensions, name: str) -> str | None:
    """Exactly one subjectAltName entry, a dNSName equal to ``name``."""
    try:
        san = list(extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return "the certificate has no subjectAltName extension"
    if len(san) != 1 or not isinstance(san[0], x509.DNSName):
        shown = ", ".join(_general_name(n) for n in san)
        return (
            f"the certificate names {len(san)} identifiers ({shown}); RFC 8737 requires "
            f"exactly one dNSName, {name}"
        )
    if san[0].value.rstrip(".").lower() != name:
        return f"the certificate's dNSName is {san[0].value!r}, not {name!r}"
    return None


def _identifier_problem(
    identifier: x509.Extension[x509.ExtensionType] | None,
    raw: bytes,
    observed: str | None,
    key_authorization: str,
) -> str | None:
    """The acmeIdentifier extension: present, critical, SHA-256 of the key authorization."""
    if identifier is None:
        return "the certificate has no acmeIdentifier extension (1.3.6.1.5.5.7.1.31)"
    if not identifier.critical:
        return "the acmeIdentifier extension is not critical"
    if observed is None:
        return f"the acmeIdentifier value {raw.hex()} is not an OCTET STRING of 32 bytes"
    expected = acme_identifier_digest(key_authorization).hex()
    if observed != expected:
        return f"the acmeIdentifier is {observed}, expected SHA-256 {expected}"
    return None


class _AttemptFailed(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


@dataclass(eq=False, kw_only=True)
class TlsAlpn01Validator(AddressCheck, KeyAuthorizationCheck):
    """Connects to ``port`` of the FQDN's allowed addresses and judges the ``acme-tls/1``
    certificate; ``address_policy`` as for http-01 (tests pass one allowing loopback);
    ``attempt_timeout`` bounds each connection and handshake."""

    method: ClassVar[DcvMethod] = METHOD
    port: int = TLS_PORT
    timeout: float = DEFAULT_TIMEOUT
    attempt_timeout: float = ATTEMPT_TIMEOUT

    async def check(
        self, identifier: str, key_authorization: str, *, wildcard: bool = False
    ) -> CheckResult:
        """Resolve, connect (IPv6 first, then IPv4), judge the certificate; never raises."""
        try:
            adn = authorization_domain_name(METHOD, identifier, wildcard)
        except WildcardNotAllowed as exc:
            return CheckResult.failure(problems.unauthorized(f"{exc} (BR-DCV-5)"), ())
        expected = acme_identifier_digest(key_authorization).hex()
        query = f"TLS {adn}:{self.port} ALPN {ALPN_PROTOCOL} SNI {adn}"
        records: list[ValidationRecord] = []
        addresses: tuple[str, ...] = ()

        def record(
            server: str | None, response: str | None = None, error: str | None = None
        ) -> None:
            records.append(
                ValidationRecord(
                    method=METHOD.label,
                    hostname=adn,
                    query=query,
                    at=self.clock.now(),
                    perspective=self.perspective,
                    server=server,
                    addresses=addresses,
                    response=truncate(response, 512) if response is not None else None,
                    error=error,
                )
            )

        def finish(problem: Problem | None, observed: str | None) -> CheckResult:
            stamped = self._stamp(records, adn, expected, ok=problem is None)
            if problem is None:
                return CheckResult.success(stamped, observed)
            _log.info("va.tlsalpn01.failed", name=adn, problem=problem.short_type)
            return CheckResult.failure(problem, stamped, observed)

        try:
            async with asyncio.timeout(self.timeout):
                try:
                    resolved = await self._resolve(adn)
                except AddressesRefused as exc:
                    addresses = tuple(str(a) for a in exc.addresses)
                    record(None, error="; ".join(filter(None, (exc.note, exc.problem.detail))))
                    return finish(exc.problem, None)
                addresses = tuple(str(a) for a in resolved.addresses)
                handshake: Handshake | None = None
                failure: Problem | None = None
                for address in resolved.candidates():
                    try:
                        handshake = await self._handshake(address, adn)
                    except _AttemptFailed as exc:
                        failure = exc.problem
                        record(host_port(address, self.port), error=exc.problem.detail)
                        continue
                    break
        except TimeoutError:
            problem = problems.connection(
                f"tls-alpn-01 for {adn}: timeout after {self.timeout:g} seconds"
            )
            record(None, error=problem.detail)
            return finish(problem, None)
        if handshake is None:
            assert failure is not None
            return finish(failure, None)
        server = handshake.server
        if handshake.alpn != ALPN_PROTOCOL:
            problem = problems.unauthorized(
                f"Cannot negotiate ALPN protocol {ALPN_PROTOCOL!r} for tls-alpn-01 with "
                f"{server}: the server selected {handshake.alpn or 'no protocol'} (RFC 8737 §3)"
            )
            record(server, response=f"ALPN {handshake.alpn or 'none'}", error=problem.detail)
            return finish(problem, None)
        if not handshake.certificate:
            problem = problems.unauthorized(
                f"tls-alpn-01 for {adn}: {server} presented no certificate"
            )
            record(server, response=f"ALPN {ALPN_PROTOCOL}", error=problem.detail)
            return finish(problem, None)
        reason, observed = judge_certificate(
            handshake.certificate, adn, key_authorization, self.clock.now()
        )
        response = f"ALPN {ALPN_PROTOCOL}; {describe(handshake.certificate)}"
        if reason is None:
            record(server, response=response)
            return finish(None, observed)
        problem = problems.unauthorized(
            f"Incorrect validation certificate for tls-alpn-01 challenge: requested {adn} "
            f"from {server}: {reason}"
        )
        record(server, response=response, error=problem.detail)
        return finish(problem, observed)

    async def _handshake(self, address: IPAddress, name: str) -> Handshake:
        """TCP connect, then one TLS handshake with SNI ``name`` offering ``acme-tls/1``;
        nothing is sent after it.  A failure before the TCP connection is ``connection``, in
        the handshake (an alert, a reset, not TLS at all) ``tls``."""
        server = host_port(address, self.port)
        stage = "connection"
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.attempt_timeout):
                _, writer = await asyncio.open_connection(str(address), self.port)
                stage = "TLS handshake"
                await writer.start_tls(client_context(), server_hostname=name)
            tls = writer.get_extra_info("ssl_object")
            assert isinstance(tls, ssl.SSLObject)
            return Handshake(server, tls.selected_alpn_protocol(), tls.getpeercert(True))
        except TimeoutError as exc:
            raise _AttemptFailed(
                _stage_problem(stage)(
                    f"tls-alpn-01 for {name}: {stage} with {server} timed out after "
                    f"{self.attempt_timeout:g} seconds"
                )
            ) from exc
        except (ssl.SSLError, OSError) as exc:
            why = str(exc) or type(exc).__name__
            raise _AttemptFailed(
                _stage_problem(stage)(
                    f"tls-alpn-01 for {name}: {stage} with {server} failed: {why}"
                )
            ) from exc
        finally:
            if writer is not None:
                writer.transport.abort()


def _stage_problem(stage: str) -> problems.ProblemType:
    return problems.connection if stage == "connection" else problems.tls
