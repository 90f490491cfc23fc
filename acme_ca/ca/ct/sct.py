"""Signed Certificate Timestamps (RFC 6962 §3.2, §3.3) and the precertificate → certificate
TBS transformation (RFC 6962 §3.1; BR 7.1.2.9).

Everything here works on bytes and is written from the RFC, independently of cryptography's
own SCT support (which the tests use as a second verifier):

* :class:`SignedCertificateTimestamp`: one SCT, its TLS encoding (``SerializedSCT``) and the
  JSON an ``add-chain`` / ``add-pre-chain`` response carries (§4.1).  ``extensions`` are kept
  byte for byte: static-ct-api logs put their ``leaf_index`` there, and it is signed;
* :func:`signed_data`: the ``digitally-signed`` struct a log signs for an X.509 or a precert
  entry, and :func:`verify_signature` against the log's key;
* :func:`remove_poison` and :func:`final_tbs`: the precertificate's TBS minus the critical
  poison (what a log signs), and the final certificate's TBS: the same bytes with the SCT list
  extension in the poison's place, so every other extension keeps its order, criticality and
  encoding (CT-3);
* :func:`sct_list_extension_value`: extnValue of ``1.3.6.1.4.1.11129.2.4.2``, an OCTET STRING
  wrapping the TLS ``SignedCertificateTimestampList`` (CT-4).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from acme_ca.ca import der

#: RFC 6962 §3.1: the precertificate poison, critical, extnValue ASN.1 NULL.
POISON_OID: Final = "1.3.6.1.4.1.11129.2.4.3"
#: RFC 6962 §3.3: the embedded SCT list.
SCT_LIST_OID: Final = "1.3.6.1.4.1.11129.2.4.2"
#: The whole poison Extension as DER: SEQUENCE { OID, BOOLEAN TRUE, OCTET STRING { 05 00 } }.
POISON_EXTENSION_DER: Final = bytes.fromhex("3013060a2b06010401d6790204030101ff04020500")
_SCT_LIST_OID_DER: Final = bytes.fromhex("060a2b06010401d679020402")
_TAG_OCTET_STRING: Final = 0x04
_TAG_CONTEXT_3: Final = 0xA3  # [3] EXPLICIT Extensions in a TBSCertificate

SCT_VERSION_V1: Final = 0
_CERTIFICATE_TIMESTAMP: Final = 0  # SignatureType.certificate_timestamp
ENTRY_X509: Final = 0
ENTRY_PRECERT: Final = 1
HASH_SHA256: Final = 4  # TLS HashAlgorithm.sha256
SIGNATURE_RSA: Final = 1  # TLS SignatureAlgorithm.rsa
SIGNATURE_ECDSA: Final = 3  # TLS SignatureAlgorithm.ecdsa
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class SctError(ValueError):
    """An SCT that cannot be decoded, or whose signature does not verify."""


def to_millis(at: datetime) -> int:
    """Milliseconds since the epoch, as SCT timestamps count them."""
    return (at.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)


def from_millis(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _u16(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise SctError("field longer than 2^16-1 bytes")
    return struct.pack(">H", len(data)) + data


def _u24(data: bytes) -> bytes:
    if not 0 < len(data) <= 0xFFFFFF:
        raise SctError("ASN.1Cert / TBSCertificate must be 1..2^24-1 bytes")
    return len(data).to_bytes(3, "big") + data


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, n: int) -> bytes:
        if self._at + n > len(self._data):
            raise SctError("truncated SCT")
        out = self._data[self._at : self._at + n]
        self._at += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack(">Q", self.take(8))[0]
        return value

    def vector16(self) -> bytes:
        return self.take(self.u16())

    def done(self) -> bool:
        return self._at == len(self._data)


@dataclass(frozen=True)
class SignedCertificateTimestamp:
    """One v1 SCT, exactly as the log produced it."""

    version: int
    log_id: bytes
    #: Milliseconds since the epoch.
    timestamp: int
    #: ``CtExtensions``, opaque and signed: never re-encoded.
    extensions: bytes
    hash_algorithm: int
    signature_algorithm: int
    signature: bytes

    def __post_init__(self) -> None:
        if self.version != SCT_VERSION_V1:
            raise SctError(f"unsupported SCT version {self.version}")
        if len(self.log_id) != 32:
            raise SctError("log id must be 32 bytes")
        if not 0 <= self.timestamp < 1 << 64:
            raise SctError("timestamp out of range")

    @property
    def timestamp_datetime(self) -> datetime:
        return from_millis(self.timestamp)

    def digitally_signed(self) -> bytes:
        """The TLS ``DigitallySigned`` struct: hash, signature algorithm, signature<0..2^16-1>."""
        return bytes([self.hash_algorithm, self.signature_algorithm]) + _u16(self.signature)

    def encode(self) -> bytes:
        """The TLS ``SignedCertificateTimestamp`` (one ``SerializedSCT`` of the list)."""
        return (
            struct.pack(">B32sQ", self.version, self.log_id, self.timestamp)
            + _u16(self.extensions)
            + self.digitally_signed()
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedCertificateTimestamp:
        reader = _Reader(data)
        sct = cls(
            version=reader.u8(),
            log_id=reader.take(32),
            timestamp=reader.u64(),
            extensions=reader.vector16(),
            hash_algorithm=reader.u8(),
            signature_algorithm=reader.u8(),
            signature=reader.vector16(),
        )
        if not reader.done():
            raise SctError("trailing bytes after the SCT")
        return sct

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> SignedCertificateTimestamp:
        """An ``add-chain`` / ``add-pre-chain`` response (RFC 6962 §4.1)."""
        try:
            version = body["sct_version"]
            timestamp = body["timestamp"]
            if not isinstance(version, int) or not isinstance(timestamp, int):
                raise SctError("sct_version and timestamp must be integers")
            log_id = base64.b64decode(body["id"], validate=True)
            extensions = base64.b64decode(body.get("extensions", ""), validate=True)
            signed = _Reader(base64.b64decode(body["signature"], validate=True))
        except (KeyError, TypeError, binascii.Error) as e:
            raise SctError(f"malformed add-chain response: {e!r}") from e
        hash_algorithm, signature_algorithm = signed.u8(), signed.u8()
        signature = signed.vector16()
        if not signed.done():
            raise SctError("trailing bytes after the DigitallySigned signature")
        return cls(
            version, log_id, timestamp, extensions, hash_algorithm, signature_algorithm, signature
        )


def encode_sct_list(scts: Sequence[SignedCertificateTimestamp]) -> bytes:
    """TLS ``SignedCertificateTimestampList``: SerializedSCT sct_list<1..2^16-1>."""
    if not scts:
        raise SctError("an SCT list holds at least one SCT")
    return _u16(b"".join(_u16(sct.encode()) for sct in scts))


def decode_sct_list(data: bytes) -> list[SignedCertificateTimestamp]:
    reader = _Reader(data)
    inner = _Reader(reader.vector16())
    if not reader.done():
        raise SctError("trailing bytes after the SCT list")
    scts = []
    while not inner.done():
        scts.append(SignedCertificateTimestamp.decode(inner.vector16()))
    if not scts:
        raise SctError("empty SCT list")
    return scts


def sct_list_extension_value(scts: Sequence[SignedCertificateTimestamp]) -> bytes:
    """extnValue contents of the SCT list extension: DER OCTET STRING { TLS list } (CT-4)."""
    return der.encode_tlv(_TAG_OCTET_STRING, encode_sct_list(scts))


def sct_list_extension(scts: Sequence[SignedCertificateTimestamp]) -> bytes:
    """The whole non-critical Extension (criticality FALSE is DEFAULT, hence absent in DER)."""
    return der.encode_tlv(
        der.TAG_SEQUENCE,
        _SCT_LIST_OID_DER + der.encode_tlv(_TAG_OCTET_STRING, sct_list_extension_value(scts)),
    )


# ------------------------------------------------------------------------- what logs sign


@dataclass(frozen=True)
class PrecertEntry:
    """``PreCert`` (RFC 6962 §3.2): the issuer key hash and the TBS without the poison."""

    issuer_key_hash: bytes
    tbs_certificate: bytes

    def encode(self) -> bytes:
        return self.issuer_key_hash + _u24(self.tbs_certificate)

    entry_type = ENTRY_PRECERT


@dataclass(frozen=True)
class X509Entry:
    """An ``ASN.1Cert`` entry: the final certificate (``add-chain``)."""

    certificate: bytes

    def encode(self) -> bytes:
        return _u24(self.certificate)

    entry_type = ENTRY_X509


LogEntry = PrecertEntry | X509Entry


def precert_entry(precert_tbs: bytes, issuer_spki_der: bytes) -> PrecertEntry:
    """The entry a log signs for a precertificate with this TBS, issued directly by the CA
    whose SubjectPublicKeyInfo is ``issuer_spki_der`` (no precertificate signing CA: SC-092)."""
    return PrecertEntry(hashlib.sha256(issuer_spki_der).digest(), remove_poison(precert_tbs))


def signed_data(sct: SignedCertificateTimestamp, entry: LogEntry) -> bytes:
    """The ``digitally-signed`` struct of RFC 6962 §3.2 for ``sct`` over ``entry``: v1 ‖
    certificate_timestamp ‖ timestamp ‖ entry_type ‖ signed_entry ‖ extensions."""
    return (
        struct.pack(">BBQH", sct.version, _CERTIFICATE_TIMESTAMP, sct.timestamp, entry.entry_type)
        + entry.encode()
        + _u16(sct.extensions)
    )


def log_id_of(key_der: bytes) -> bytes:
    """RFC 6962 §3.2: LogID = SHA-256 of the log's DER SubjectPublicKeyInfo."""
    return hashlib.sha256(key_der).digest()


def verify_signature(
    sct: SignedCertificateTimestamp, public_key: PublicKeyTypes, entry: LogEntry
) -> None:
    """Raise :class:`SctError` unless ``sct`` is signed over ``entry`` by ``public_key``."""
    if sct.hash_algorithm != HASH_SHA256:
        raise SctError(f"SCT hash algorithm {sct.hash_algorithm} is not SHA-256")
    data = signed_data(sct, entry)
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if sct.signature_algorithm != SIGNATURE_ECDSA:
                raise SctError("SCT signature algorithm does not match the log's ECDSA key")
            public_key.verify(sct.signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            if sct.signature_algorithm != SIGNATURE_RSA:
                raise SctError("SCT signature algorithm does not match the log's RSA key")
            public_key.verify(sct.signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise SctError(f"unsupported log key type {type(public_key).__name__}")
    except InvalidSignature:
        raise SctError("SCT signature does not verify with the log's key") from None


# ------------------------------------------------------------------------- TBS surgery


def _elements(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, end) of each DER element in data[start:end]."""
    out = []
    offset = start
    while offset < end:
        tag, content, stop = der.read_tlv(data, offset)
        out.append((tag, offset, content, stop))
        offset = stop
    return out


def _split_extensions(tbs: bytes) -> tuple[bytes, list[bytes]]:
    """(TBS content before [3], each Extension's DER) of a TBSCertificate."""
    tag, start, end = der.read_tlv(tbs)
    if tag != der.TAG_SEQUENCE or end != len(tbs):
        raise SctError("TBSCertificate is not a single DER SEQUENCE")
    children = _elements(tbs, start, end)
    if not children or children[-1][0] != _TAG_CONTEXT_3:
        raise SctError("TBSCertificate has no extensions")
    _, ext_at, ext_content, ext_end = children[-1]
    seq_tag, seq_start, seq_end = der.read_tlv(tbs, ext_content)
    if seq_tag != der.TAG_SEQUENCE or seq_end != ext_end:
        raise SctError("malformed [3] Extensions")
    extensions = [tbs[at:stop] for _, at, _, stop in _elements(tbs, seq_start, seq_end)]
    return tbs[start:ext_at], extensions


def _join_extensions(head: bytes, extensions: Sequence[bytes]) -> bytes:
    body = head
    if extensions:
        body += der.encode_tlv(
            _TAG_CONTEXT_3, der.encode_tlv(der.TAG_SEQUENCE, b"".join(extensions))
        )
    return der.encode_tlv(der.TAG_SEQUENCE, body)


def _poisoned(tbs: bytes) -> tuple[bytes, list[bytes]]:
    head, extensions = _split_extensions(tbs)
    if extensions[-1] != POISON_EXTENSION_DER:
        raise SctError("the last extension of the precertificate TBS is not the critical poison")
    if extensions.count(POISON_EXTENSION_DER) != 1:
        raise SctError("the poison appears more than once")
    return head, extensions[:-1]


def remove_poison(precert_tbs: bytes) -> bytes:
    """The precertificate's TBS without its poison: what a log signs (RFC 6962 §3.2)."""
    head, extensions = _poisoned(precert_tbs)
    return _join_extensions(head, extensions)


def final_tbs(precert_tbs: bytes, scts: Sequence[SignedCertificateTimestamp]) -> bytes:
    """The final certificate's TBS: the precertificate's with the SCT list extension in the
    poison's place (the last position), every other byte unchanged (CT-3)."""
    head, extensions = _poisoned(precert_tbs)
    return _join_extensions(head, [*extensions, sct_list_extension(scts)])


def _extension_oid(extension: bytes) -> bytes:
    """The DER extnID (tag, length, value) of one Extension."""
    _, start, _ = der.read_tlv(extension)
    _, _, oid_end = der.read_tlv(extension, start)
    return extension[start:oid_end]


def _sct_list_index(extensions: Sequence[bytes]) -> int:
    found = [i for i, ext in enumerate(extensions) if _extension_oid(ext) == _SCT_LIST_OID_DER]
    if len(found) != 1:
        raise SctError("the certificate has no (or more than one) SCT list extension")
    return found[0]


def embedded_scts(certificate_tbs: bytes) -> list[SignedCertificateTimestamp]:
    """The SCTs in a certificate's SCT list extension, exactly as encoded there."""
    _, extensions = _split_extensions(certificate_tbs)
    ext = extensions[_sct_list_index(extensions)]
    _, start, end = der.read_tlv(ext)
    elements = _elements(ext, start, end)
    if len(elements) != 2 or elements[1][0] != _TAG_OCTET_STRING:
        raise SctError("the SCT list extension must be non-critical with one extnValue")
    tag, inner_start, inner_end = der.read_tlv(ext, elements[1][2])
    if tag != _TAG_OCTET_STRING or inner_end != elements[1][3]:
        raise SctError("extnValue is not an OCTET STRING wrapping the TLS SCT list")
    return decode_sct_list(ext[inner_start:inner_end])


def certificate_precert_entry(certificate_tbs: bytes, issuer_spki_der: bytes) -> PrecertEntry:
    """The entry the embedded SCTs of a final certificate were signed over: its TBS without
    the SCT list extension (RFC 6962 §3.2)."""
    head, extensions = _split_extensions(certificate_tbs)
    del extensions[_sct_list_index(extensions)]
    return PrecertEntry(
        hashlib.sha256(issuer_spki_der).digest(), _join_extensions(head, extensions)
    )
