"""CSR checks at finalize (RFC 8555 §7.4, §11.1; BR 6.1.1.3, 6.1.5, 7.1.2.7.12).

Each way a CSR can be unacceptable has a named reason, and each is a ``badCSR`` problem: the
signature must verify, the SAN dNSNames must be exactly the order's identifiers (a CN, if any,
one of them), no other SAN types or name forms, and the key must pass the subscriber key
policy and differ from the account key.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from acme_ca.acme import problems
from acme_ca.acme.problems import AcmeError
from acme_ca.ra.keys import KeyPolicy, KeyRejected

NOT_DER = "CSR is not a DER PKCS#10 request"
BAD_SIGNATURE = "CSR signature does not verify"
NAMES_DIFFER = "CSR names differ from the order's identifiers"
CN_NOT_IN_SAN = "CSR common name is not one of its SAN dNSNames"
OTHER_SAN_TYPES = "CSR asks for SAN types other than dNSName"
NO_SAN = "CSR has no subjectAltName dNSNames"
ACCOUNT_KEY = "CSR key is the account key"
KEY_REJECTED = "CSR key rejected"
UNSUPPORTED_KEY = "CSR key type is not RSA or ECDSA"


@dataclass(frozen=True)
class CheckedCsr:
    der: bytes
    names: tuple[str, ...]
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def _bad(reason: str, detail: str = "") -> AcmeError:
    return AcmeError(problems.bad_csr(f"{reason}{': ' + detail if detail else ''}"))


def _spki(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def check_csr(
    der: bytes, identifiers: list[str], *, account_spki: bytes, key_policy: KeyPolicy
) -> CheckedCsr:
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError:
        raise _bad(NOT_DER) from None
    if not csr.is_signature_valid:
        raise _bad(BAD_SIGNATURE)
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise _bad(NO_SAN) from None
    except (ValueError, x509.DuplicateExtension):
        raise _bad(NOT_DER, "its extensions cannot be parsed") from None
    if any(not isinstance(name, x509.DNSName) for name in san):
        raise _bad(OTHER_SAN_TYPES)
    names = [str(n).lower() for n in san.get_values_for_type(x509.DNSName)]
    if not names:
        raise _bad(NO_SAN)
    wanted = {i.lower() for i in identifiers}
    if set(names) != wanted or len(names) != len(set(names)):
        missing, extra = sorted(wanted - set(names)), sorted(set(names) - wanted)
        raise _bad(NAMES_DIFFER, f"missing {missing}, unexpected {extra}")
    for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        if str(attribute.value).lower() not in wanted:
            raise _bad(CN_NOT_IN_SAN, str(attribute.value))
    key = csr.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise _bad(UNSUPPORTED_KEY)
    if _spki(key) == account_spki:
        raise _bad(ACCOUNT_KEY, "use a separate key for the certificate (RFC 8555 §11.1)")
    try:
        await key_policy.check(key, purpose="csr")
    except KeyRejected as exc:
        raise _bad(KEY_REJECTED, exc.detail) from None
    # Order of the order's identifiers, so the first SAN (and CN) is what the client listed first.
    ordered = tuple(i.lower() for i in identifiers)
    return CheckedCsr(der=der, names=ordered, public_key=key)
