"""Just enough DER to put an HSM signature on a certificate or CRL that cryptography built,
and to encode what cryptography would be too slow for (the entries of a large CRL:
:func:`encode_integer`, :func:`encode_time`).

cryptography can only sign with keys it holds, so the TBS bytes are made with a throwaway key:

1. Build the certificate (or CRL) with :func:`throwaway_key` of the signer's key type and the
   same hash.  The TBS then already carries the right ``signature`` AlgorithmIdentifier
   (RFC 5280 4.1.1.2 and 5.1.1.2 require it to equal the outer one).  The throwaway-signed
   object is also what the linters check (Boulder's "lint certificate").
2. Take ``tbs_certificate_bytes`` / ``tbs_certlist_bytes``.
3. Have the real :class:`~acme_ca.ca.signer.Signer` sign exactly those bytes, and wrap them with
   :func:`assemble_signed`: SEQUENCE { tbs, signatureAlgorithm, BIT STRING signature }.

:func:`throwaway_signed_certificate` and :func:`throwaway_signed_crl` do step 1;
:func:`sign_tbs_certificate` and :func:`sign_tbs_crl` do steps 2-3 and re-check that the TBS's
inner AlgorithmIdentifier matches the signer's before anything is signed.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from acme_ca.ca.signer import CaPrivateKey, HashName, KeyType, Signer

TAG_INTEGER: Final = 0x02
TAG_BIT_STRING: Final = 0x03
TAG_SEQUENCE: Final = 0x30
TAG_CONTEXT_0: Final = 0xA0  # [0] EXPLICIT Version in a TBSCertificate
TAG_OCTET_STRING: Final = 0x04
TAG_OID: Final = 0x06
TAG_ENUMERATED: Final = 0x0A
TAG_UTC_TIME: Final = 0x17
TAG_GENERALIZED_TIME: Final = 0x18
#: RFC 5280 4.1.2.5: dates through 2049 are UTCTime, from 2050 on GeneralizedTime.
_UTC_TIME_LIMIT: Final = datetime(2050, 1, 1, tzinfo=UTC)


def encode_length(length: int) -> bytes:
    """DER definite length: short form below 128, else 0x80|n followed by n big-endian bytes."""
    if length < 0:
        raise ValueError("negative length")
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode_tlv(tag: int, content: bytes) -> bytes:
    """One DER element with a single-byte tag."""
    return bytes([tag]) + encode_length(len(content)) + content


def encode_integer(value: int) -> bytes:
    """DER INTEGER of a non-negative ``value``: minimal big-endian, 0x00 first if the high bit
    is set (so the number stays positive)."""
    if value < 0:
        raise ValueError("negative INTEGER")
    return encode_tlv(TAG_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def encode_time(at: datetime) -> bytes:
    """RFC 5280 Time of ``at`` in whole UTC seconds: UTCTime ``YYMMDDHHMMSSZ`` before 2050,
    GeneralizedTime ``YYYYMMDDHHMMSSZ`` from 2050 on (4.1.2.5, 5.1.2.4, 5.1.2.6).

    Written with one bytes format (fixed lengths: 13 and 15): a large CRL encodes one per entry.
    """
    at = at.astimezone(UTC)
    fields = (at.month, at.day, at.hour, at.minute, at.second)
    if at < _UTC_TIME_LIMIT:
        if at.year < 1950:
            raise ValueError("UTCTime cannot express years before 1950")
        return b"\x17\x0d%02d%02d%02d%02d%02d%02dZ" % (at.year % 100, *fields)
    return b"\x18\x0f%04d%02d%02d%02d%02d%02dZ" % (at.year, *fields)


def read_tlv(der: bytes, offset: int = 0) -> tuple[int, int, int]:
    """Parse the element at ``offset``: (tag, content start, content end).

    Only single-byte tags and definite lengths, which is all X.509 uses; truncation raises.
    """
    if offset + 2 > len(der):
        raise ValueError("truncated DER element")
    tag = der[offset]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not supported")
    first = der[offset + 1]
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or start + count > len(der):
            raise ValueError("bad DER length")
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    end = start + length
    if end > len(der):
        raise ValueError("truncated DER element")
    return tag, start, end


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, end) of each element in ``der[start:end]``."""
    out = []
    offset = start
    while offset < end:
        tag, content, stop = read_tlv(der, offset)
        out.append((tag, offset, content, stop))
        offset = stop
    return out


def assemble_signed(tbs_der: bytes, sig_alg_der: bytes, signature: bytes) -> bytes:
    """SEQUENCE { tbs, sigAlg, BIT STRING (no unused bits) signature }: a Certificate or CRL."""
    bit_string = encode_tlv(TAG_BIT_STRING, b"\x00" + signature)
    return encode_tlv(TAG_SEQUENCE, tbs_der + sig_alg_der + bit_string)


def split_signed(der: bytes) -> tuple[bytes, bytes, bytes]:
    """Undo :func:`assemble_signed`: (tbs DER, signatureAlgorithm DER, signature bytes)."""
    tag, start, end = read_tlv(der)
    if tag != TAG_SEQUENCE or end != len(der):
        raise ValueError("not a single DER SEQUENCE")
    parts = _children(der, start, end)
    if len(parts) != 3 or parts[2][0] != TAG_BIT_STRING:
        raise ValueError("not a signed structure")
    (_, tbs_at, _, tbs_end), (_, alg_at, _, alg_end), (_, _, bits_at, bits_end) = parts
    if bits_at == bits_end or der[bits_at] != 0:
        raise ValueError("signature BIT STRING has unused bits")
    return der[tbs_at:tbs_end], der[alg_at:alg_end], der[bits_at + 1 : bits_end]


def tbs_signature_algorithm(tbs_der: bytes) -> bytes:
    """The ``signature`` AlgorithmIdentifier inside a TBSCertificate or TBSCertList.

    It is the first SEQUENCE after the optional version ([0] for certificates, INTEGER for
    CRLs) and, for certificates, the serial number INTEGER.
    """
    tag, start, end = read_tlv(tbs_der)
    if tag != TAG_SEQUENCE or end != len(tbs_der):
        raise ValueError("TBS is not a single DER SEQUENCE")
    for child_tag, at, _, stop in _children(tbs_der, start, end):
        if child_tag in (TAG_CONTEXT_0, TAG_INTEGER):
            continue
        if child_tag != TAG_SEQUENCE:
            break
        return tbs_der[at:stop]
    raise ValueError("TBS has no signature AlgorithmIdentifier")


#: The throwaway RSA key's size: the smallest cryptography makes. Nothing of the key reaches
#: the TBS (sha256WithRSAEncryption names no size), and a 1024-bit signature costs about a
#: fifth of a 2048-bit one (docs/performance.md, "Throwaway keys").
THROWAWAY_RSA_BITS: Final = 1024
#: The throwaway EC key's curve for every EC signer: ecdsa-with-SHA256/384 names no curve, and
#: P-256 signs about eight times faster than P-384.
THROWAWAY_CURVE: Final = "secp256r1"


@functools.cache
def throwaway_key(key_type: KeyType, curve: str | None = None) -> CaPrivateKey:
    """A process-lifetime key of this type, only ever used to make TBS bytes and lint copies.

    ``curve`` is a cryptography curve name (``secp256r1``, ``secp384r1``). The RSA key has
    :data:`THROWAWAY_RSA_BITS`: its size does not reach the TBS, so it is never a real CA key.
    """
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=THROWAWAY_RSA_BITS)
    curves: dict[str, ec.EllipticCurve] = {"secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1()}
    if curve not in curves:
        raise ValueError(f"unsupported curve {curve!r}")
    return ec.generate_private_key(curves[curve])


def throwaway_for(key_type: KeyType) -> CaPrivateKey:
    """The cheapest throwaway key whose signature AlgorithmIdentifier is the signer's: the
    algorithm identifiers name the hash and the key's family, never its size or curve."""
    return throwaway_key("ec", THROWAWAY_CURVE) if key_type == "ec" else throwaway_key("rsa")


def _hash(hash: HashName) -> hashes.SHA256 | hashes.SHA384:
    return hashes.SHA256() if hash == "sha256" else hashes.SHA384()


def throwaway_signed_certificate(
    builder: x509.CertificateBuilder, signer: Signer, hash: HashName
) -> x509.Certificate:
    """Step 1: the certificate signed by a throwaway key whose TBS ``signer`` can sign as is."""
    signer.signature_algorithm_der(hash)  # refuses a key/hash pair the BRs forbid
    return builder.sign(throwaway_for(signer.key_type), _hash(hash))


def throwaway_signed_tbs(tbs_der: bytes, signer: Signer, hash: HashName) -> bytes:
    """Step 1 for TBS bytes made without a builder (the final certificate of a
    precertificate, :func:`acme_ca.ca.ct.sct.final_tbs`): those exact bytes under a throwaway
    signature, for the linter.  The TBS must already name the signer's algorithm."""
    sig_alg = signer.signature_algorithm_der(hash)
    if tbs_signature_algorithm(tbs_der) != sig_alg:
        raise ValueError("TBS names another signature algorithm than the signer's")
    key = throwaway_for(signer.key_type)
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(tbs_der, padding.PKCS1v15(), _hash(hash))
    else:
        signature = key.sign(tbs_der, ec.ECDSA(_hash(hash)))
    return assemble_signed(tbs_der, sig_alg, signature)


def throwaway_signed_crl(
    builder: x509.CertificateRevocationListBuilder, signer: Signer, hash: HashName
) -> x509.CertificateRevocationList:
    """Step 1 for CRLs: see :func:`throwaway_signed_certificate`."""
    signer.signature_algorithm_der(hash)
    return builder.sign(throwaway_for(signer.key_type), _hash(hash))


async def _sign_tbs(tbs_der: bytes, signer: Signer, hash: HashName) -> bytes:
    sig_alg = signer.signature_algorithm_der(hash)
    inner = tbs_signature_algorithm(tbs_der)
    if inner != sig_alg:
        raise ValueError(
            f"TBS names signature algorithm {inner.hex()} but the signer would use "
            f"{sig_alg.hex()}; build it with the throwaway key of the same type and hash"
        )
    signature = await signer.sign(tbs_der, hash)
    return assemble_signed(tbs_der, sig_alg, signature)


async def sign_tbs(tbs_der: bytes, signer: Signer, hash: HashName) -> bytes:
    """Steps 2-3, returning the signed DER unparsed: for a large CRL, whose parsing and
    signature check belong in a worker thread rather than on the event loop."""
    return await _sign_tbs(tbs_der, signer, hash)


async def sign_tbs_certificate(tbs_der: bytes, signer: Signer, hash: HashName) -> x509.Certificate:
    """Steps 2-3: sign ``tbs_certificate_bytes`` with the real key; return the certificate."""
    return x509.load_der_x509_certificate(await _sign_tbs(tbs_der, signer, hash))


async def sign_tbs_crl(
    tbs_der: bytes, signer: Signer, hash: HashName
) -> x509.CertificateRevocationList:
    """Steps 2-3 for ``tbs_certlist_bytes``; return the CRL."""
    return x509.load_der_x509_crl(await _sign_tbs(tbs_der, signer, hash))
