"""ACME Renewal Information (RFC 9773): certificate identifiers and suggested windows (pure).

A certID (§4.1) is ``base64url(AKI keyIdentifier) "." base64url(serial)``, where the serial
part is the DER INTEGER *content* octets (a positive serial whose top bit is set keeps its
leading 0x00), both unpadded.  The same string is the path under ``renewalInfo`` and the
value of an order's ``replaces`` field (§5).  Parsing is strict: only the canonical encoding
of a positive, minimally encoded serial of at most 20 octets (RFC 5280 §4.1.2.2) is accepted,
so one certificate has exactly one certID.

Suggested windows (§4.2) are chosen here, so the policy is in one place:

* not revoked: the last third of the validity period, ending a tenth of the lifetime before
  ``notAfter`` so a client renewing at the very end of the window still has time to retry
  (``start = notBefore + 2/3·lifetime``, ``end = notAfter - lifetime/10``); a profile may
  choose other fractions of the lifetime (``renewal_window``: ``shortlived`` renews between
  half and three quarters of its 160 hours, so an outage of a day still leaves time);
* revoked: the hour before the revocation, i.e. wholly in the past, which tells a client to
  renew immediately (§4.2 step 3); fixed to the revocation time, so every answer is the same
  and may be cached.

``Retry-After`` (§4.3) is 6 hours normally (a revocation decided within the BRs' 24 hours
leaves clients time to see a changed window and renew, §4.3.1's example split) and 1 hour
for a revoked certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

from cryptography import x509

from acme_ca.acme.b64 import b64url_decode, b64url_encode

#: RFC 5280 §4.1.2.2: serials are at most 20 octets.
MAX_SERIAL_OCTETS = 20
#: Generous cap for a keyIdentifier (SHA-1 ones are 20 octets, RFC 7093 ones up to 64).
MAX_KEY_IDENTIFIER_OCTETS = 64
MAX_CERT_ID_LENGTH = 200

RETRY_AFTER = timedelta(hours=6)
REVOKED_RETRY_AFTER = timedelta(hours=1)
#: How far before the revocation the window of a revoked certificate starts.
REVOKED_WINDOW = timedelta(hours=1)
#: The window as fractions of the lifetime: the last third, ending a tenth before notAfter.
DEFAULT_WINDOW = (Fraction(2, 3), Fraction(9, 10))


class CertIdError(ValueError):
    """Not a well-formed RFC 9773 certID."""


@dataclass(frozen=True)
class CertId:
    """A parsed certID: the issuer's key identifier and the certificate serial."""

    key_identifier: bytes
    serial: int

    @property
    def serial_hex(self) -> str:
        """The serial as stored in ``certificates.serial`` (lower-case hex, no leading 0s)."""
        return format(self.serial, "x")

    def __str__(self) -> str:
        return cert_id(self.key_identifier, self.serial)


@dataclass(frozen=True)
class RenewalWindow:
    start: datetime
    end: datetime
    retry_after: timedelta


def serial_content_octets(serial: int) -> bytes:
    """The content octets of the DER INTEGER ``serial`` (positive): minimal two's complement."""
    if serial <= 0:
        raise ValueError("a certificate serial is positive")
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big")


def cert_id(key_identifier: bytes, serial: int) -> str:
    return f"{b64url_encode(key_identifier)}.{b64url_encode(serial_content_octets(serial))}"


def authority_key_identifier(cert: x509.Certificate) -> bytes | None:
    """The AKI keyIdentifier of ``cert``, or None when it has none."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    return aki.key_identifier


def cert_id_of(cert: x509.Certificate) -> str:
    """The certID of ``cert``; ValueError if it has no AKI keyIdentifier."""
    key_identifier = authority_key_identifier(cert)
    if not key_identifier:
        raise ValueError("certificate has no Authority Key Identifier keyIdentifier")
    return cert_id(key_identifier, cert.serial_number)


def matches(cert_der: bytes, wanted: CertId) -> bool:
    """Whether the DER certificate has the certID's serial and AKI keyIdentifier."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError:
        return False
    return (
        cert.serial_number == wanted.serial
        and authority_key_identifier(cert) == wanted.key_identifier
    )


def _part(text: str, what: str) -> bytes:
    try:
        raw = b64url_decode(text)
    except ValueError:
        raise CertIdError(f"the {what} part is not unpadded base64url") from None
    if not raw:
        raise CertIdError(f"the {what} part is empty")
    if b64url_encode(raw) != text:
        raise CertIdError(f"the {what} part is not canonically encoded")
    return raw


def parse_cert_id(text: str) -> CertId:
    """Parse ``keyIdentifier.serial`` (RFC 9773 §4.1); :class:`CertIdError` if malformed."""
    if not isinstance(text, str) or len(text) > MAX_CERT_ID_LENGTH:
        raise CertIdError("a certID is a short string")
    parts = text.split(".")
    if len(parts) != 2:
        raise CertIdError("a certID is base64url(AKI keyIdentifier).base64url(serial)")
    key_identifier = _part(parts[0], "keyIdentifier")
    serial_octets = _part(parts[1], "serial")
    if len(key_identifier) > MAX_KEY_IDENTIFIER_OCTETS:
        raise CertIdError("the keyIdentifier is too long")
    if len(serial_octets) > MAX_SERIAL_OCTETS:
        raise CertIdError(f"the serial is longer than {MAX_SERIAL_OCTETS} octets")
    if serial_octets[0] & 0x80:
        raise CertIdError(
            "the serial encodes a negative INTEGER (a leading 0x00 octet is required when "
            "the top bit is set)"
        )
    if len(serial_octets) > 1 and serial_octets[0] == 0 and not serial_octets[1] & 0x80:
        raise CertIdError("the serial is not minimally DER-encoded (superfluous leading 0x00)")
    serial = int.from_bytes(serial_octets, "big")
    if serial == 0:
        raise CertIdError("the serial is zero")
    return CertId(key_identifier, serial)


def _seconds(delta: timedelta) -> timedelta:
    return timedelta(seconds=int(delta.total_seconds()))


def _fraction_of(delta: timedelta, fraction: Fraction) -> timedelta:
    return _seconds(delta * fraction.numerator / fraction.denominator)


def suggested_window(
    not_before: datetime,
    not_after: datetime,
    revoked_at: datetime | None,
    window: tuple[Fraction, Fraction] = DEFAULT_WINDOW,
) -> RenewalWindow:
    """The window to suggest for a certificate (see the module docstring): from ``window[0]``
    to ``window[1]`` of its lifetime (its profile's ``renewal_window``); ``end > start``."""
    if revoked_at is not None:
        end = revoked_at.replace(microsecond=0)
        return RenewalWindow(end - REVOKED_WINDOW, end, REVOKED_RETRY_AFTER)
    lifetime = not_after - not_before
    start = not_before.replace(microsecond=0) + _fraction_of(lifetime, window[0])
    end = not_after.replace(microsecond=0) - _fraction_of(lifetime, 1 - window[1])
    if end <= start:  # degenerate lifetimes of a few seconds
        end = start + timedelta(seconds=1)
    return RenewalWindow(start, end, RETRY_AFTER)
