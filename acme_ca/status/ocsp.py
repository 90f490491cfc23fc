"""OCSP (RFC 6960, RFC 5019 and its 5019bis update): pre-produced responses signed by the
issuing CA itself, and request parsing for the key-less responder.

Responses (OCSP-2..7, BR-OCSP-1..4):

* ``successful`` BasicOCSPResponse, one SingleResponse, no ``certs`` (the issuing CA is the
  responder: relying parties already hold its certificate), no nonce (pre-produced);
* ResponderID ``byKey``: SHA-1 of the issuer's subjectPublicKey BIT STRING contents;
* CertID hashed with SHA-1 or SHA-256: one response per algorithm is pre-produced, and a
  request is answered with the one of its own algorithm;
* ``good``, or ``revoked`` with revocationTime and, unless unspecified (0), revocationReason
  (inside RevokedInfo: BR-OCSP-4 forbids a reasonCode singleExtension); serials we never
  issued get no signed response at all (``unauthorized``, RFC 5019 §2.2.3), never ``good``;
* thisUpdate = signing time, nextUpdate = thisUpdate + ``ocsp_validity_hours``, producedAt =
  signing time; GeneralizedTime in whole seconds.

cryptography's :class:`~cryptography.x509.ocsp.OCSPResponseBuilder` can only sign with a key it
holds and insists that key be the responder certificate's.  So the response is built and signed
with the throwaway key of the issuer's key type (:func:`acme_ca.ca.der.throwaway_for`) and a
stand-in responder certificate for it; then the tbsResponseData is taken apart, its
ResponderID replaced by the issuer's key hash and its producedAt by the signing time, and
exactly the re-encoded tbsResponseData is signed through the issuer's
:class:`~acme_ca.ca.signer.Signer` and re-assembled::

    OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED,
                                responseBytes [0] EXPLICIT SEQUENCE {
                                    responseType OBJECT IDENTIFIER (id-pkix-ocsp-basic),
                                    response OCTET STRING (DER BasicOCSPResponse) } }
    BasicOCSPResponse ::= SEQUENCE { tbsResponseData, signatureAlgorithm, signature BIT STRING }
    ResponseData ::= SEQUENCE { version [0] DEFAULT v1, responderID, producedAt,
                                responses, responseExtensions [1] OPTIONAL }
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from acme_ca.ca.der import (
    TAG_BIT_STRING,
    TAG_SEQUENCE,
    assemble_signed,
    encode_tlv,
    read_tlv,
    split_signed,
    throwaway_for,
)
from acme_ca.ca.signer import (
    CaPrivateKey,
    HashName,
    KeyType,
    Signer,
    default_hash,
    verify_signature,
)
from acme_ca.clock import Clock
from acme_ca.db.status import OcspResponseRecord, StatusRepository
from acme_ca.status.crl import CRL_REASONS, der_children, raw_subject_der

log = structlog.get_logger(component="acme_ca.status.ocsp")

CertIdHash = Literal["sha1", "sha256"]
#: The CertID hash algorithms responses are pre-produced for (RFC 5019bis 3.1.1).
CERT_ID_HASHES: Final[tuple[CertIdHash, ...]] = ("sha1", "sha256")
_HASH_OBJECTS: Final[Mapping[CertIdHash, hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1(),  # noqa: S303 - CertID hash, not a signature (RFC 5019)
    "sha256": hashes.SHA256(),
}

#: id-pkix-ocsp-basic (1.3.6.1.5.5.7.48.1.1), DER-encoded.
ID_PKIX_OCSP_BASIC: Final = bytes.fromhex("06092b0601050507300101")
TAG_OCTET_STRING: Final = 0x04
TAG_ENUMERATED: Final = 0x0A
TAG_GENERALIZED_TIME: Final = 0x18
TAG_CONTEXT_0: Final = 0xA0
TAG_BY_NAME: Final = 0xA1
TAG_BY_KEY: Final = 0xA2
#: Largest OCSP request the responder reads; a one-CertID request is about 100 bytes.
MAX_REQUEST_BYTES: Final = 4096


class MalformedRequest(ValueError):
    """Not a DER OCSPRequest with exactly one CertID: answered with malformedRequest."""


# --------------------------------------------------------------------------- hashes


def subject_public_key_bits(certificate: x509.Certificate) -> bytes:
    """The contents of the subjectPublicKey BIT STRING (without its unused-bits octet)."""
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    parts = der_children(spki)
    if len(parts) != 2 or parts[1][0] != TAG_BIT_STRING:
        raise ValueError("SubjectPublicKeyInfo is not SEQUENCE { algorithm, BIT STRING }")
    _, start, end = read_tlv(parts[1])
    if start == end or parts[1][start] != 0:
        raise ValueError("subjectPublicKey has unused bits")
    return parts[1][start + 1 : end]


@functools.lru_cache(maxsize=64)
def responder_key_hash(certificate: x509.Certificate) -> bytes:
    """ResponderID byKey: SHA-1 of the subjectPublicKey bits (RFC 6960 4.2.1); remembered
    per issuer certificate (a few), as it was computed twice per certificate issued."""
    return hashlib.sha1(subject_public_key_bits(certificate)).digest()  # noqa: S324


@dataclass(frozen=True)
class IssuerHashes:
    """The issuerNameHash and issuerKeyHash of a CertID for one issuer and algorithm."""

    algorithm: CertIdHash
    name_hash: bytes
    key_hash: bytes


def issuer_hashes(certificate: x509.Certificate, algorithm: CertIdHash) -> IssuerHashes:
    """The CertID hashes of ``certificate`` as issuer, remembered per issuer certificate and
    algorithm (the same for every response it signs; computed twice per certificate issued)."""
    return _issuer_hashes(certificate, algorithm)


@functools.lru_cache(maxsize=64)
def _issuer_hashes(certificate: x509.Certificate, algorithm: CertIdHash) -> IssuerHashes:
    return IssuerHashes(
        algorithm,
        hashlib.new(algorithm, raw_subject_der(certificate)).digest(),
        hashlib.new(algorithm, subject_public_key_bits(certificate)).digest(),
    )


# --------------------------------------------------------------------------- signing


@dataclass(frozen=True)
class CertStatus:
    """What a response states: good, or revoked at a time with a CRLReason (0: none given)."""

    revoked_at: datetime | None = None
    reason: int | None = None

    @property
    def name(self) -> Literal["good", "revoked"]:
        return "good" if self.revoked_at is None else "revoked"


GOOD: Final = CertStatus()


@functools.cache
def _stand_in_responder(key_type: KeyType) -> tuple[CaPrivateKey, x509.Certificate]:
    """The throwaway key and a self-signed certificate for it: only so cryptography builds
    the response; its ResponderID is replaced before anything real is signed."""
    key = throwaway_for(key_type)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme_ca OCSP stand-in")])
    at = datetime(2000, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(at)
        .not_valid_after(at + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _hash_object(hash: HashName) -> hashes.HashAlgorithm:
    return hashes.SHA256() if hash == "sha256" else hashes.SHA384()


def generalized_time(at: datetime) -> bytes:
    """DER GeneralizedTime ``YYYYMMDDHHMMSSZ`` (UTC, whole seconds: RFC 5280 4.1.2.5.2)."""
    text = at.astimezone(UTC).strftime("%Y%m%d%H%M%SZ").encode()
    return encode_tlv(TAG_GENERALIZED_TIME, text)


def _resign_tbs(tbs: bytes, key_hash: bytes, produced_at: datetime) -> bytes:
    """``tbs`` with ResponderID byKey ``key_hash`` and producedAt ``produced_at``."""
    out = []
    seen_responder = seen_produced = False
    for element in der_children(tbs):
        tag = element[0]
        if tag in (TAG_BY_NAME, TAG_BY_KEY) and not seen_responder:
            out.append(encode_tlv(TAG_BY_KEY, encode_tlv(TAG_OCTET_STRING, key_hash)))
            seen_responder = True
        elif tag == TAG_GENERALIZED_TIME and seen_responder and not seen_produced:
            out.append(generalized_time(produced_at))
            seen_produced = True
        else:
            out.append(element)
    if not (seen_responder and seen_produced):
        raise ValueError("tbsResponseData without responderID and producedAt")
    return encode_tlv(TAG_SEQUENCE, b"".join(out))


def basic_response_of(response_der: bytes) -> bytes:
    """The DER BasicOCSPResponse inside a successful OCSPResponse."""
    parts = der_children(response_der)
    if len(parts) != 2 or parts[0] != bytes([TAG_ENUMERATED, 1, 0]) or parts[1][0] != TAG_CONTEXT_0:
        raise ValueError("not a successful OCSPResponse")
    (response_bytes,) = der_children(parts[1])
    response_type, octets = der_children(response_bytes)
    if response_type != ID_PKIX_OCSP_BASIC or octets[0] != TAG_OCTET_STRING:
        raise ValueError("responseType is not id-pkix-ocsp-basic")
    _, start, end = read_tlv(octets)
    return octets[start:end]


def successful_response(basic_der: bytes) -> bytes:
    """OCSPResponse { successful, [0] { id-pkix-ocsp-basic, OCTET STRING basic } }."""
    response_bytes = encode_tlv(
        TAG_SEQUENCE, ID_PKIX_OCSP_BASIC + encode_tlv(TAG_OCTET_STRING, basic_der)
    )
    return encode_tlv(
        TAG_SEQUENCE, bytes([TAG_ENUMERATED, 1, 0]) + encode_tlv(TAG_CONTEXT_0, response_bytes)
    )


class OcspSignerNotAllowed(ValueError):
    """The certificate of the key asked to sign OCSP does not allow it (BR 7.1.2.8)."""


@functools.lru_cache(maxsize=64)
def ocsp_signing_problem(certificate: x509.Certificate) -> str | None:
    """Why the key of ``certificate`` may not sign OCSP responses, or None.

    BR 7.1.2.8: responses are signed by the issuing CA, whose certificate then has the
    keyUsage digitalSignature, or by a delegated responder certificate with the EKU
    id-kp-OCSPSigning (and digitalSignature).
    """
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or not usage.digital_signature:
        return (
            f"{certificate.subject.rfc4514_string()} lacks keyUsage digitalSignature, so its "
            "key may not sign OCSP responses (BR 7.1.2.8)"
        )
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        is_ca = constraints.value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        try:
            eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = None
        if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            return (
                f"{certificate.subject.rfc4514_string()} is not a CA and lacks "
                "id-kp-OCSPSigning, so it is no delegated OCSP responder (BR 7.1.2.8)"
            )
    return None


async def sign_ocsp_response(
    issuer_certificate: x509.Certificate,
    signer: Signer,
    serial: int,
    status: CertStatus,
    algorithm: CertIdHash,
    *,
    this_update: datetime,
    next_update: datetime,
    produced_at: datetime,
) -> bytes:
    """A signed OCSPResponse (DER) about ``serial`` from its issuing CA, as described above.

    Raises :class:`OcspSignerNotAllowed` (nothing signed) when the issuer's certificate does
    not allow its key to sign OCSP (:func:`ocsp_signing_problem`).
    """
    problem = ocsp_signing_problem(issuer_certificate)
    if problem is not None:
        raise OcspSignerNotAllowed(problem)
    hash = default_hash(signer.public_key)
    key, stand_in = _stand_in_responder(signer.key_type)
    ids = issuer_hashes(issuer_certificate, algorithm)
    reason = None
    if status.revoked_at is not None and status.reason:
        reason = CRL_REASONS.get(status.reason)
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=ids.name_hash,
            issuer_key_hash=ids.key_hash,
            serial_number=serial,
            algorithm=_HASH_OBJECTS[algorithm],
            cert_status=ocsp.OCSPCertStatus.GOOD
            if status.revoked_at is None
            else ocsp.OCSPCertStatus.REVOKED,
            this_update=this_update.replace(microsecond=0),
            next_update=next_update.replace(microsecond=0),
            revocation_time=None
            if status.revoked_at is None
            else status.revoked_at.replace(microsecond=0),
            revocation_reason=reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, stand_in)
    )
    draft = builder.sign(key, _hash_object(hash))
    draft_tbs, _, _ = split_signed(basic_response_of(draft.public_bytes(Encoding.DER)))
    key_hash = responder_key_hash(issuer_certificate)
    tbs = _resign_tbs(draft_tbs, key_hash, produced_at.replace(microsecond=0))
    signature = await signer.sign(tbs, hash)
    der = successful_response(assemble_signed(tbs, signer.signature_algorithm_der(hash), signature))
    _check(der, tbs, signature, signer, hash, key_hash, serial, status)
    return der


def _check(
    der: bytes,
    tbs: bytes,
    signature: bytes,
    signer: Signer,
    hash: HashName,
    key_hash: bytes,
    serial: int,
    status: CertStatus,
) -> None:
    """Parse what was assembled and make sure it says what was meant, signed by the CA."""
    parsed = ocsp.load_der_ocsp_response(der)
    if parsed.public_bytes(Encoding.DER) != der or parsed.tbs_response_bytes != tbs:
        raise ValueError("re-assembled OCSP response does not round-trip")
    if parsed.responder_key_hash != key_hash or parsed.serial_number != serial:
        raise ValueError("re-assembled OCSP response names the wrong responder or serial")
    expected = (
        ocsp.OCSPCertStatus.GOOD if status.revoked_at is None else ocsp.OCSPCertStatus.REVOKED
    )
    if parsed.certificate_status != expected or parsed.signature != signature:
        raise ValueError("re-assembled OCSP response has the wrong status or signature")
    verify_signature(signer.public_key, signature, tbs, hash)


# --------------------------------------------------------------------------- unsigned answers


def unsigned_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """An error OCSPResponse (no responseBytes, unsigned: RFC 6960 2.3)."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER)


MALFORMED_REQUEST: Final = unsigned_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
INTERNAL_ERROR: Final = unsigned_response(ocsp.OCSPResponseStatus.INTERNAL_ERROR)
TRY_LATER: Final = unsigned_response(ocsp.OCSPResponseStatus.TRY_LATER)
UNAUTHORIZED: Final = unsigned_response(ocsp.OCSPResponseStatus.UNAUTHORIZED)


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class OcspQuery:
    """The one CertID of a request.  ``algorithm`` is None for a hash we pre-produce nothing
    for (SHA-384, SHA-512, MD5 ...)."""

    algorithm: CertIdHash | None
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int

    @property
    def serial_hex(self) -> str:
        """The serial as ``certificates.serial`` stores it."""
        return format(self.serial, "x")


def parse_request(der: bytes) -> OcspQuery:
    """Parse a DER OCSPRequest with exactly one CertID (RFC 5019 2.1.1).  Extensions (a
    nonce) and an optional signature are ignored: responses are pre-produced."""
    if not der or len(der) > MAX_REQUEST_BYTES:
        raise MalformedRequest("empty or oversized OCSP request")
    try:
        request = ocsp.load_der_ocsp_request(der)
    except (ValueError, NotImplementedError) as e:  # the latter: "more than one request"
        raise MalformedRequest(f"not a single-CertID OCSPRequest: {e}") from e
    try:
        name = request.hash_algorithm.name
    except UnsupportedAlgorithm:
        name = ""
    algorithm: CertIdHash | None = name if name in ("sha1", "sha256") else None  # type: ignore[assignment]
    if request.serial_number < 0:
        raise MalformedRequest("negative serial number")
    return OcspQuery(
        algorithm, request.issuer_name_hash, request.issuer_key_hash, request.serial_number
    )


def decode_get_request(encoded: str) -> bytes:
    """The DER of a GET request's last path part: url-encoded base64 (RFC 6960 A.1; %2F, %2B
    and %3D decoded, RFC 5019bis 5).  Missing padding and the URL-safe alphabet are
    tolerated; anything else raises :class:`MalformedRequest`."""
    text = urllib.parse.unquote(encoded).strip()
    if not text or len(text) > MAX_REQUEST_BYTES * 2:
        raise MalformedRequest("empty or oversized GET request")
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MalformedRequest("GET request is not base64") from e


# --------------------------------------------------------------------------- responder


@dataclass(frozen=True)
class OcspAnswer:
    """What to send back: the DER, and the stored response it came from (None for the
    unsigned error statuses, which must not be cached)."""

    der: bytes
    record: OcspResponseRecord | None = None
    #: Why an error status was chosen, for the request log.
    why: str | None = None


class OcspResponder:
    """Answers OCSP requests from the pre-produced responses in the database; holds no key.

    A CertID is matched against every issuing CA by issuerNameHash and issuerKeyHash in the
    request's own algorithm (SHA-1 or SHA-256).  No stored, current response (a serial we
    never issued, a certificate whose response is not produced yet or has lapsed, another
    CA's certificate, another hash algorithm) is ``unauthorized``: RFC 5019 2.2.3 allows
    that of pre-produced responders, and it is never ``good`` (BR-OCSP-4).
    """

    def __init__(
        self,
        repository: StatusRepository,
        issuers: Mapping[str, x509.Certificate],
        clock: Clock,
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._by_hashes: dict[tuple[str, bytes, bytes], str] = {}
        for name, certificate in issuers.items():
            for algorithm in CERT_ID_HASHES:
                ids = issuer_hashes(certificate, algorithm)
                self._by_hashes[(algorithm, ids.name_hash, ids.key_hash)] = name

    def issuer_of(self, query: OcspQuery) -> str | None:
        if query.algorithm is None:
            return None
        return self._by_hashes.get((query.algorithm, query.issuer_name_hash, query.issuer_key_hash))

    async def answer(self, request_der: bytes) -> OcspAnswer:
        try:
            query = parse_request(request_der)
        except MalformedRequest as e:
            return OcspAnswer(MALFORMED_REQUEST, why=str(e))
        return await self.answer_query(query)

    async def answer_query(self, query: OcspQuery) -> OcspAnswer:
        if query.algorithm is None:
            return OcspAnswer(UNAUTHORIZED, why="CertID hash algorithm not supported")
        issuer = self.issuer_of(query)
        if issuer is None:
            return OcspAnswer(UNAUTHORIZED, why="CertID names no issuing CA of ours")
        record = await self._repository.get_ocsp_response(issuer, query.serial_hex, query.algorithm)
        if record is None:
            return OcspAnswer(UNAUTHORIZED, why="no response for this serial")
        if record.next_update <= self._clock.now():
            log.warning(
                "ocsp.response_stale",
                issuer=issuer,
                serial=query.serial_hex,
                next_update=record.next_update.isoformat(),
            )
            return OcspAnswer(UNAUTHORIZED, why="stored response has lapsed")
        return OcspAnswer(record.der, record)
