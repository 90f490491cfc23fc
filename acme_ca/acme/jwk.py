"""JSON Web Keys (RFC 7517/7518) for account keys, and their RFC 7638 thumbprints.

Parsed strictly by hand: only RSA and EC P-256/P-384/P-521 public keys, members of the right
type, EC points validated on their curve by ``cryptography``.  Private members are refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from acme_ca.acme.b64 import b64url_decode, b64url_encode

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


class JwkError(ValueError):
    """The JWK is malformed, private, or of a type we do not accept."""


@dataclass(frozen=True)
class Jwk:
    """A public account key: the cryptography key plus its canonical JSON members."""

    key: PublicKey
    members: tuple[tuple[str, str], ...]

    @property
    def kty(self) -> str:
        return dict(self.members)["kty"]

    @property
    def curve(self) -> str | None:
        return dict(self.members).get("crv")

    def to_json(self) -> dict[str, str]:
        return dict(self.members)

    def thumbprint(self) -> bytes:
        """RFC 7638 SHA-256 thumbprint over the required members in lexical order."""
        canonical = json.dumps(dict(sorted(self.members)), separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()

    def thumbprint_b64(self) -> str:
        return b64url_encode(self.thumbprint())


def _member(data: Mapping[str, object], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise JwkError(f"JWK member {name!r} is missing or not a string")
    return value


def _b64_int(data: Mapping[str, object], name: str) -> int:
    try:
        raw = b64url_decode(_member(data, name))
    except ValueError:
        raise JwkError(f"JWK member {name!r} is not base64url") from None
    if not raw:
        raise JwkError(f"JWK member {name!r} is empty")
    return int.from_bytes(raw, "big")


def parse_jwk(data: object) -> Jwk:
    """Parse a public JWK object; raise :class:`JwkError` on anything unexpected."""
    if not isinstance(data, Mapping):
        raise JwkError("JWK must be a JSON object")
    if _PRIVATE_MEMBERS & data.keys():
        raise JwkError("JWK contains private key material")
    kty = _member(data, "kty")
    if kty == "RSA":
        n, e = _b64_int(data, "n"), _b64_int(data, "e")
        try:
            key: PublicKey = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise JwkError(f"invalid RSA key: {exc}") from None
        return Jwk(key, (("e", _member(data, "e")), ("kty", "RSA"), ("n", _member(data, "n"))))
    if kty == "EC":
        crv = _member(data, "crv")
        if crv not in _CURVES:
            raise JwkError(f"unsupported curve {crv!r}; accepted: P-256, P-384, P-521")
        curve, size = _CURVES[crv]
        try:
            x, y = b64url_decode(_member(data, "x")), b64url_decode(_member(data, "y"))
        except ValueError:
            raise JwkError("EC coordinates are not base64url") from None
        if len(x) != size or len(y) != size:
            raise JwkError("EC coordinates have the wrong length")
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
        except ValueError:
            raise JwkError("EC point is not on the curve") from None
        x_b64, y_b64 = _member(data, "x"), _member(data, "y")
        return Jwk(key, (("crv", crv), ("kty", "EC"), ("x", x_b64), ("y", y_b64)))
    raise JwkError(f"unsupported key type {kty!r}; accepted: RSA, EC")


def jwk_from_key(key: PublicKey) -> Jwk:
    """The JWK of a cryptography public key (used by tests and for stored keys)."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return parse_jwk(
            {
                "kty": "RSA",
                "n": b64url_encode(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                "e": b64url_encode(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
            }
        )
    crv = _CURVE_NAMES.get(key.curve.name)
    if crv is None:
        raise JwkError(f"unsupported curve {key.curve.name}")
    size = _CURVES[crv][1]
    nums = key.public_numbers()
    return parse_jwk(
        {
            "kty": "EC",
            "crv": crv,
            "x": b64url_encode(nums.x.to_bytes(size, "big")),
            "y": b64url_encode(nums.y.to_bytes(size, "big")),
        }
    )
