"""CT helpers shared by the CT and issuance tests."""

from __future__ import annotations

from cryptography.x509.oid import ExtensionOID
from pyasn1.codec.der import decoder, encoder  # type: ignore[import-untyped]
from pyasn1_alt_modules import rfc5280  # type: ignore[import-untyped]


def pyasn1_without_poison(tbs_der: bytes) -> bytes:
    """The reference for the test log's poison removal: the TBSCertificate decoded by pyasn1,
    the poison extension dropped, the rest re-encoded (DER in, DER out)."""
    tbs, rest = decoder.decode(tbs_der, asn1Spec=rfc5280.TBSCertificate())
    assert not rest
    extensions = tbs["extensions"]
    kept = extensions.clone()
    for extension in extensions:
        if str(extension["extnID"]) != ExtensionOID.PRECERT_POISON.dotted_string:
            kept.append(extension)
    tbs["extensions"] = kept
    encoded: bytes = encoder.encode(tbs)
    return encoded
