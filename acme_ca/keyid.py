"""The id under which a public key is blocked, revoked for compromise or logged.

A bottom-layer module: the RA (key policy, revocation), the signing worker's re-check of a
CSR's key (``ca/recheck.py``), the CA's own key names and the operator commands all name a
key the same way without reaching into one another.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes


def spki_der(public_key: PublicKeyTypes) -> bytes:
    """The key's DER SubjectPublicKeyInfo."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_sha256(public_key: PublicKeyTypes) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo: the id under which keys are blocked.

    Hashing the whole SPKI (as badkeys and Boulder's blocked-keys table do) makes the id
    independent of certificate or JWK encoding.
    """
    return hashlib.sha256(spki_der(public_key)).digest()
