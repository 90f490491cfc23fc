"""The subscriber certificate template, as it stands on the date of issuance.

What varies between the CA's profiles (:mod:`acme_ca.profiles`: ``dv``, ``tlsserver``,
``shortlived``, ``ov``) is carried by :class:`ProfileSettings` (the reserved policy OID, the
validity, CN or not, SKI, keyEncipherment, the OCSP and CRL URLs) and, for OV, by the vetted
organization's subject attributes in :class:`IssuanceRequest`.  The defaults are the DV
profile described below, byte for byte.

Step one of Boulder's "prepare, lint, then sign" (letsencrypt/boulder ``issuance/cert.go``):
:func:`build_certificate` turns an :class:`IssuanceRequest` into the exact TBSCertificate bytes
the issuer will sign, plus a copy signed by a throwaway key for the linter
(:mod:`acme_ca.ca.lint`, BR 4.3.1.2).  :func:`issue` then has the real signer sign exactly those
bytes.  Nothing here touches a private key of the CA.

The profile follows CA/B Forum BR 7.1.2.7 (v2.2.6) and the CP's Table 7.1.1.2 (JPRS DV), with
these choices where the two leave room or disagree:

* ``version`` v3; ``serialNumber`` from the caller (:func:`new_serial`: 128 CSPRNG bits, fixed
  length, DER content always 17 octets); ``issuer`` byte-identical to the issuing CA's subject
  (checked on the encoded bytes, not trusted to the encoder).
* ``validity``: notBefore = signing time - backdate (BR: within 48 h of signing), whole seconds;
  notAfter = notBefore + validity - 1 s, because BR 6.3.2 counts the validity period inclusively
  (RFC 5280 4.1.2.5).  The BR limit is taken at the *signing time*, which is never looser than
  the limit at notBefore because the limits only shrink.
* ``subject``: commonName only, equal to the first dNSName, when it fits the 64-character upper
  bound; otherwise an empty subject and a critical SAN (BR 7.1.2.7.12).  A profile without CN
  (``tlsserver``) always has the empty subject; an OV request puts the vetted organization's
  C, ST, L and O before the CN (BR 7.1.2.7.4, 7.1.4), and its SAN is then never critical.
  BR 7.1.2.7.2 makes CN NOT RECOMMENDED for DV, but the CP's table makes it mandatory, so
  pkilint's WARNING ``cabf.serverauth.dv.common_name_attribute_present`` is expected.
* Extensions, in this fixed order (CT-3 needs the final certificate to repeat the
  precertificate's order; the poison sits last so the SCT list can take its place):

  1. authorityKeyIdentifier: keyIdentifier only, the issuer's SKI extension value byte for byte
     (BR 7.1.2.11.1), or RFC 5280 method 1 over the issuer key if it has none.
  2. subjectKeyIdentifier: only if configured.  BR 7.1.2.7.6 makes it NOT RECOMMENDED; the CP's
     table lists it; off by default.
  3. keyUsage, critical: digitalSignature, plus keyEncipherment for RSA subscriber keys as the
     CP's table lists (BR 7.1.2.7.11: MAY, but asserting both is NOT RECOMMENDED, so pkilint
     warns ``subscriber_rsa_digitalsignature_and_keyencipherment_present``; switch it off with
     ``ProfileSettings.rsa_key_encipherment``).
  4. extKeyUsage: id-kp-serverAuth only (Chrome Root Program from 2027-03-15; BR-PROF-9).
  5. basicConstraints, critical, cA FALSE, no pathLen.  BR 7.1.2.7.8 makes it MAY and the CP's
     table does not list it; we include it, as Let's Encrypt and most public CAs do, so that no
     client can mistake a subscriber certificate for a CA certificate.  The CPS should say so.
  6. certificatePolicies: 2.23.140.1.2.1 (OV: 2.23.140.1.2.2) first (BR 7.1.2.7.9 RECOMMENDS
     the reserved OID first), then the CA's own policy OID; no qualifiers (NOT RECOMMENDED by
     BR).  The CP's table orders the two the other way and adds a CPS qualifier; the BR
     recommendation wins here.
  7. cRLDistributionPoints: one DistributionPoint, fullName = the http CRL URL (a short-lived
     profile may leave it out; ours keep it).
  8. authorityInfoAccess: id-ad-ocsp (only if configured) then id-ad-caIssuers, both http, in the
     CP's order.
  9. subjectAltName: the dNSNames in request order.
  10. precertificates only: the CT poison, critical, extnValue exactly ``0500`` (RFC 6962 3.1).

* ``signature``: sha256WithRSAEncryption (NULL parameters) for RSA issuers, ecdsa-with-SHA256 for
  P-256 and ecdsa-with-SHA384 for P-384 (BR 7.1.3.2, checked by :mod:`acme_ca.ca.signer`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
)

from acme_ca.br import DV_POLICY_OID, OV_POLICY_OID
from acme_ca.ca import der
from acme_ca.ca.signer import (
    CaPublicKey,
    HashName,
    Signer,
    SignerError,
    SignerPublicKey,
)

SubscriberPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_RESERVED_SUBSCRIBER_OIDS: Final = frozenset({DV_POLICY_OID, OV_POLICY_OID})
#: The CP's own policy OID (CP 1.2: JPRS CA Certificate Policy).
DEFAULT_POLICY_OID: Final = "1.3.6.1.4.1.53827.1.1.4"
_ANY_POLICY: Final = "2.5.29.32.0"
_CABF_RESERVED_ARC: Final = "2.23.140.1."

#: BR 7.1.2.7 notBefore: "a value within 48 hours of the certificate signing operation".
MAX_BACKDATE: Final = timedelta(hours=48)
#: RFC 5280 ub-common-name.
MAX_COMMON_NAME_LENGTH: Final = 64
#: BR 7.1.2.7: serialNumber < 2^159 (so its DER content is at most 20 octets, RFC 5280 4.1.2.2).
SERIAL_LIMIT: Final = 1 << 159
#: CSPRNG bits in a serial from :func:`new_serial` (BR: at least 64).
SERIAL_RANDOM_BITS: Final = 128
_MIN_RSA_BITS: Final = 2048
_SUBSCRIBER_CURVES: Final = frozenset({"secp256r1", "secp384r1", "secp521r1"})  # BR 7.1.3.1.2

#: BR 6.3.2 (ballot SC-081): (issued on or after, maximum validity in days), newest first.
_MAX_VALIDITY_DAYS: Final = (
    (datetime(2029, 3, 15, tzinfo=UTC), 47),
    (datetime(2027, 3, 15, tzinfo=UTC), 100),
    (datetime(2026, 3, 15, tzinfo=UTC), 200),
)
_MAX_VALIDITY_DAYS_BEFORE: Final = 398  # issued before 2026-03-15


class ProfileError(ValueError):
    """The request or settings cannot produce a certificate that meets the profile."""


def _require_aware(at: datetime, what: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ProfileError(f"{what} must be a timezone-aware datetime")
    return at.astimezone(UTC)


def max_validity(at: datetime) -> timedelta:
    """BR 6.3.2: the longest validity period (counted inclusively) for issuance at ``at``.

    398 days before 2026-03-15, 200 days from then, 100 from 2027-03-15 and 47 from 2029-03-15;
    each limit starts at 00:00 UTC of its date.
    """
    at = _require_aware(at, "issuance time")
    for since, days in _MAX_VALIDITY_DAYS:
        if at >= since:
            return timedelta(days=days)
    return timedelta(days=_MAX_VALIDITY_DAYS_BEFORE)


def recommended_validity(at: datetime) -> timedelta:
    """BR 6.3.2's SHOULD NOT: one day under :func:`max_validity` (397, 199, 99, 46 days).

    The day of headroom absorbs leap seconds and fractional seconds, which BR 6.3.2 counts as a
    further day.
    """
    return max_validity(at) - timedelta(days=1)


def new_serial() -> int:
    """A serial number: 128 bits from ``secrets`` under a fixed top bit.

    The value lies in [2^128, 2^129), so it is positive, far below 2^159, non-sequential, and its
    DER INTEGER content is always exactly 17 octets (no leading 0x00 is ever needed).  Uniqueness
    is the database's job (a unique constraint), not this function's.
    """
    return (1 << SERIAL_RANDOM_BITS) | secrets.randbits(SERIAL_RANDOM_BITS)


def _check_http_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ProfileError(f"{what} must be an http:// URL (BR 7.1.2.7.7, 7.1.2.11.2): {url!r}")
    if not url.isascii() or any(c.isspace() for c in url):
        raise ProfileError(f"{what} must be an ASCII URI without whitespace: {url!r}")


@dataclass(frozen=True, kw_only=True)
class ProfileSettings:
    """How one issuer fills in one profile (the DV profile by default); validated on
    construction."""

    #: The CA's own certificate policy OID, placed after the CA/B Forum reserved OID.
    policy_oid: str = DEFAULT_POLICY_OID
    #: The CA/B Forum reserved OID listed first: DV (2.23.140.1.2.1) or OV (2.23.140.1.2.2).
    reserved_policy_oid: str = DV_POLICY_OID
    #: http URL of the CRL covering certificates from this issuer (CRL Distribution Points);
    #: None leaves the extension out (short-lived certificates only, BR 7.1.2.11.2).
    crl_url: str | None
    #: http URL of the OCSP responder; None leaves id-ad-ocsp out of AIA (BR: MAY).
    ocsp_url: str | None = None
    #: http URL of the issuing CA's certificate (AIA id-ad-caIssuers).
    ca_issuers_url: str
    #: Validity in days, counted inclusively; None: BR 6.3.2's SHOULD for the issuance date.
    #: Always capped at the BR maximum for the issuance date.
    validity_days: int | None = None
    #: Validity as a period (hours, for short-lived profiles); takes precedence over
    #: ``validity_days``.  Always capped at the BR maximum for the issuance date.
    validity_period: timedelta | None = None
    #: notBefore lies this far before the signing time (relying parties' clock skew).
    backdate: timedelta = timedelta(seconds=60)
    #: SKI in subscriber certificates: listed by the CP, NOT RECOMMENDED by BR 7.1.2.7.6.
    include_subject_key_identifier: bool = False
    #: keyEncipherment next to digitalSignature for RSA keys: listed by the CP, MAY in BR
    #: 7.1.2.7.11, but asserting both is NOT RECOMMENDED there (pkilint WARNING).
    rsa_key_encipherment: bool = True
    #: commonName = the first dNSName (when it fits 64 characters); False: no CN at all.
    subject_common_name: bool = True

    def __post_init__(self) -> None:
        try:
            oid = x509.ObjectIdentifier(self.policy_oid)
        except ValueError as e:
            raise ProfileError(f"policy_oid {self.policy_oid!r} is not an OID") from e
        if oid.dotted_string in (
            _ANY_POLICY,
            DV_POLICY_OID,
            OV_POLICY_OID,
        ) or oid.dotted_string.startswith(_CABF_RESERVED_ARC):
            raise ProfileError(
                f"policy_oid {self.policy_oid} must be the CA's own OID, not anyPolicy or a "
                "CA/B Forum reserved OID (BR 7.1.2.7.9)"
            )
        if self.reserved_policy_oid not in _RESERVED_SUBSCRIBER_OIDS:
            raise ProfileError(
                f"reserved_policy_oid {self.reserved_policy_oid} is not the DV or OV OID"
            )
        if self.crl_url is not None:
            _check_http_url(self.crl_url, "crl_url")
        _check_http_url(self.ca_issuers_url, "ca_issuers_url")
        if self.ocsp_url is not None:
            _check_http_url(self.ocsp_url, "ocsp_url")
        if self.validity_days is not None and self.validity_days < 1:
            raise ProfileError("validity_days must be at least 1")
        if self.validity_period is not None and self.validity_period < timedelta(hours=1):
            raise ProfileError("validity_period must be at least an hour")
        if not timedelta(0) <= self.backdate < MAX_BACKDATE:
            raise ProfileError("backdate must be at least 0 and under 48 hours (BR 7.1.2.7)")

    def validity(self, at: datetime) -> timedelta:
        """The validity period (inclusive) of a certificate signed at ``at``."""
        limit = max_validity(at)
        if self.validity_period is not None:
            return min(self.validity_period, limit)
        if self.validity_days is None:
            return recommended_validity(at)
        return min(timedelta(days=self.validity_days), limit)


def _check_subscriber_key(public_key: object) -> SubscriberPublicKey:
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < _MIN_RSA_BITS or public_key.key_size % 8:
            raise ProfileError(f"RSA key of {public_key.key_size} bits (BR 6.1.5)")
        return public_key
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in _SUBSCRIBER_CURVES:
            raise ProfileError(f"curve {public_key.curve.name} is not allowed (BR 6.1.5)")
        return public_key
    raise ProfileError(f"subscriber key type {type(public_key).__name__} is not allowed")


@dataclass(frozen=True)
class IssuanceRequest:
    """What to certify: names already validated by the RA, the CSR's key, the serial, the time."""

    #: dNSNames in SAN order; the first becomes the CN when it fits in 64 characters.
    names: tuple[str, ...]
    public_key: SubscriberPublicKey
    #: From :func:`new_serial` (or equivalent: ≥ 64 CSPRNG bits, 0 < serial < 2^159).
    serial: int
    #: When the signature is made: the issuance date for every date-gated rule.
    signing_time: datetime
    #: OV: the vetted organization's subject attributes (C, ST, L, O, in BR 7.1.4 order),
    #: placed before the CN; None for DV.  Never taken from the CSR.
    organization: x509.Name | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.names, tuple) or not self.names:
            raise ProfileError("names must be a non-empty tuple of DNS names")
        seen: set[str] = set()
        for name in self.names:
            if not isinstance(name, str) or not name:
                raise ProfileError("every name must be a non-empty string")
            if not name.isascii() or name.endswith(".") or any(c.isspace() for c in name):
                raise ProfileError(
                    f"{name!r} is not an LDH/P-label DNS name without trailing dot (BR 7.1.2.7.12)"
                )
            if name.lower() in seen:
                raise ProfileError(f"duplicate name {name!r}")
            seen.add(name.lower())
        _check_subscriber_key(self.public_key)
        if not isinstance(self.serial, int) or not 0 < self.serial < SERIAL_LIMIT:
            raise ProfileError("serial must be > 0 and < 2^159 (BR 7.1.2.7)")
        _require_aware(self.signing_time, "signing_time")


@dataclass(frozen=True)
class PreparedCertificate:
    """A certificate ready to sign: the exact TBS bytes and the linting copy of them."""

    #: DER TBSCertificate that :func:`issue` will sign, byte for byte.
    tbs_der: bytes
    #: The same TBS signed by a throwaway key (BR 4.3.1.2 method 1): what the linter reads.
    lint_der: bytes
    not_before: datetime
    not_after: datetime
    serial: int
    precertificate: bool
    hash: HashName
    #: SubjectPublicKeyInfo DER of the issuer key the TBS was built for.
    issuer_spki_der: bytes = field(repr=False)


class _IssuerPublicKey(SignerPublicKey):
    """The issuer's public key in :class:`Signer` shape, so that
    :func:`der.throwaway_signed_certificate` picks the throwaway key of the same type and hash.

    It cannot sign: only the real signer in :func:`issue` does that.
    """

    async def sign(self, data: bytes, hash: HashName) -> bytes:
        raise SignerError("the issuer's public key cannot sign")

    async def aclose(self) -> None:
        """Nothing to release."""


def _spki_der(public_key: CaPublicKey | SubscriberPublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _tbs_elements(tbs_der: bytes) -> list[bytes]:
    """The top-level elements of a TBSCertificate, without the optional [0] version."""
    tag, start, end = der.read_tlv(tbs_der)
    if tag != der.TAG_SEQUENCE or end != len(tbs_der):
        raise ProfileError("TBSCertificate is not a single DER SEQUENCE")
    elements = []
    offset = start
    while offset < end:
        _, _, stop = der.read_tlv(tbs_der, offset)
        elements.append(tbs_der[offset:stop])
        offset = stop
    if elements and elements[0][0] == der.TAG_CONTEXT_0:
        elements = elements[1:]
    return elements


# Positions in a TBSCertificate after the version: serialNumber, signature, issuer, validity,
# subject, subjectPublicKeyInfo, then optional unique IDs and [3] extensions.
_ISSUER: Final = 2
_SUBJECT: Final = 4


def _authority_key_identifier(
    issuer_cert: x509.Certificate, issuer_public_key: CaPublicKey
) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        key_id = ski.value.key_identifier
    except x509.ExtensionNotFound:
        key_id = x509.SubjectKeyIdentifier.from_public_key(issuer_public_key).key_identifier
    return x509.AuthorityKeyIdentifier(
        key_identifier=key_id, authority_cert_issuer=None, authority_cert_serial_number=None
    )


def _check_issuer(issuer_cert: x509.Certificate, issuer_public_key: CaPublicKey) -> None:
    in_cert = issuer_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if in_cert != _spki_der(issuer_public_key):
        raise ProfileError("issuer_public_key is not the key in issuer_cert")
    try:
        bc = issuer_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as e:
        raise ProfileError("issuer certificate has no basicConstraints") from e
    if not bc.ca:
        raise ProfileError("issuer certificate is not a CA certificate")


def build_certificate(
    issuer_cert: x509.Certificate,
    issuer_public_key: CaPublicKey,
    hash: HashName,
    settings: ProfileSettings,
    request: IssuanceRequest,
    *,
    precertificate: bool = False,
) -> PreparedCertificate:
    """Build the subscriber TBSCertificate of ``settings``' profile (module docstring) and its
    linting copy.

    Raises :class:`ProfileError` for requests the profile cannot honour, and ``ValueError`` for a
    key/hash pair BR 7.1.3.2 forbids (P-256 with SHA-384, ...).
    """
    _check_issuer(issuer_cert, issuer_public_key)
    issuer_view = _IssuerPublicKey(issuer_public_key)
    issuer_view.signature_algorithm_der(hash)  # refuses key/hash pairs BR 7.1.3.2 forbids

    signing_time = _require_aware(request.signing_time, "signing_time")
    not_before = (signing_time - settings.backdate).replace(microsecond=0)
    not_after = not_before + settings.validity(signing_time) - timedelta(seconds=1)

    first = request.names[0]
    with_cn = settings.subject_common_name and len(first) <= MAX_COMMON_NAME_LENGTH
    attributes = list(request.organization) if request.organization is not None else []
    if with_cn:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, first))
    subject = x509.Name(attributes)

    subscriber_key = _check_subscriber_key(request.public_key)
    is_rsa = isinstance(subscriber_key, rsa.RSAPublicKey)

    builder = (
        x509.CertificateBuilder()
        .serial_number(request.serial)
        .issuer_name(issuer_cert.subject)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .subject_name(subject)
        .public_key(subscriber_key)
        .add_extension(_authority_key_identifier(issuer_cert, issuer_public_key), critical=False)
    )
    if settings.include_subject_key_identifier:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subscriber_key), critical=False
        )
    builder = (
        builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa and settings.rsa_key_encipherment,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.CertificatePolicies(
                [
                    x509.PolicyInformation(
                        x509.ObjectIdentifier(settings.reserved_policy_oid), None
                    ),
                    x509.PolicyInformation(x509.ObjectIdentifier(settings.policy_oid), None),
                ]
            ),
            critical=False,
        )
    )
    if settings.crl_url is not None:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(settings.crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    access = []
    if settings.ocsp_url is not None:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP,
                x509.UniformResourceIdentifier(settings.ocsp_url),
            )
        )
    access.append(
        x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS,
            x509.UniformResourceIdentifier(settings.ca_issuers_url),
        )
    )
    builder = builder.add_extension(
        x509.AuthorityInformationAccess(access), critical=False
    ).add_extension(
        x509.SubjectAlternativeName([x509.DNSName(n) for n in request.names]),
        critical=not attributes,
    )
    if precertificate:
        builder = builder.add_extension(x509.PrecertPoison(), critical=True)

    lint_cert = der.throwaway_signed_certificate(builder, issuer_view, hash)
    tbs_der = lint_cert.tbs_certificate_bytes

    elements = _tbs_elements(tbs_der)
    issuer_subject = _tbs_elements(issuer_cert.tbs_certificate_bytes)[_SUBJECT]
    if elements[_ISSUER] != issuer_subject:
        # cryptography re-encodes the Name; refuse rather than issue a certificate whose issuer
        # differs from the CA's subject (BR 7.1.2.7, 7.1.4.1: byte-for-byte identical).
        raise ProfileError("encoded issuer differs from the issuing CA's subject bytes")

    return PreparedCertificate(
        tbs_der=tbs_der,
        lint_der=lint_cert.public_bytes(serialization.Encoding.DER),
        not_before=not_before,
        not_after=not_after,
        serial=request.serial,
        precertificate=precertificate,
        hash=hash,
        issuer_spki_der=_spki_der(issuer_public_key),
    )


async def issue(prepared: PreparedCertificate, signer: Signer, hash: HashName) -> x509.Certificate:
    """Sign exactly ``prepared.tbs_der`` with the issuer's real key and return the certificate.

    Call it only after the linting copy has been linted clean.  Refuses a signer whose key or
    hash is not the one the TBS was built for, and checks that the TBS came back unchanged.
    """
    if hash != prepared.hash:
        raise ProfileError(f"TBS was built for {prepared.hash}, not {hash}")
    if _spki_der(signer.public_key) != prepared.issuer_spki_der:
        raise ProfileError("signer key is not the issuer key the TBS was built for")
    certificate = await der.sign_tbs_certificate(prepared.tbs_der, signer, hash)
    if certificate.tbs_certificate_bytes != prepared.tbs_der:
        raise ProfileError("signed certificate's TBS differs from the prepared TBS")
    return certificate
