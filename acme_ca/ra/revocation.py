"""Who may revoke what, and with which reason (RFC 8555 §7.6, BR 4.9.1.1, BR 7.2.2).

Subscribers may give: unspecified (0, sent by omitting the reason), keyCompromise (1),
superseded (4), cessationOfOperation (5), affiliationChanged (3).  The CRL/OCSP side of a
revocation is the status room's job; this module only decides and records.
"""

from __future__ import annotations

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from acme_ca.acme import problems
from acme_ca.acme.jwk import PublicKey
from acme_ca.acme.problems import AcmeError
from acme_ca.clock import Clock
from acme_ca.db.accounts import Account
from acme_ca.db.certificates import CertificateRecord, CertificateRepository

log = structlog.get_logger(component="acme_ca.ra.revocation")

SUBSCRIBER_REASONS = frozenset({0, 1, 3, 4, 5})


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def _spki(key: object) -> bytes:
    assert hasattr(key, "public_bytes")
    der: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


class RevocationAuthority:
    def __init__(self, certificates: CertificateRepository, clock: Clock) -> None:
        self._certificates = certificates
        self._clock = clock

    async def revoke(
        self, der: bytes, reason: int | None, *, account: Account | None, jwk_key: PublicKey | None
    ) -> CertificateRecord:
        if reason is not None and reason not in SUBSCRIBER_REASONS:
            raise AcmeError(
                problems.bad_revocation_reason(
                    f"reason {reason} is not one a subscriber may request; use 0, 1, 3, 4 or 5"
                )
            )
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise AcmeError(
                problems.malformed("certificate is not a DER X.509 certificate")
            ) from None
        record = await self._certificates.get_by_serial(serial_hex(cert.serial_number))
        if record is None or record.der != der:
            raise AcmeError(problems.not_found("this certificate was not issued by this CA"))
        await self._authorize(cert, record, account, jwk_key)
        actor = f"account:{account.id}" if account else "certificate-key"
        if not await self._certificates.revoke(
            record.id, reason=reason or 0, now=self._clock.now(), actor=actor
        ):
            raise AcmeError(problems.already_revoked("the certificate is already revoked"))
        log.info(
            "certificate.revoked",
            serial=record.serial,
            reason=reason or 0,
            actor=actor,
            account_id=record.account_id,
            order_id=record.order_id,
        )
        updated = await self._certificates.get(record.id)
        assert updated is not None
        return updated

    async def _authorize(
        self,
        cert: x509.Certificate,
        record: CertificateRecord,
        account: Account | None,
        jwk_key: PublicKey | None,
    ) -> None:
        if jwk_key is not None:
            if _spki(jwk_key) != _spki(cert.public_key()):
                raise AcmeError(problems.unauthorized("the JWS key is not the certificate's key"))
            return
        assert account is not None
        if account.id == record.account_id:
            return
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = san.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        if names and await self._certificates.account_holds_valid_authzs(
            account.id, names, self._clock.now()
        ):
            return
        raise AcmeError(
            problems.unauthorized(
                "the account neither ordered this certificate nor holds authorizations for all "
                "its names"
            )
        )
