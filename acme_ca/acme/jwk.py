"""JSON Web Keys (RFC 7517/7518) for account keys, and their RFC 7638 thumbprints.

Account keys are held as josepy's JWK types (``JWKRSA``, ``JWKEC``; no Ed25519, which we do
not accept) and their thumbprints are josepy's. We parse the members ourselves, stricter than
josepy: public RSA or EC P-256/P-384/P-521 keys only, every member a string in canonical
unpadded base64url, and the key sent in its one encoding, which is the encoding josepy writes
back: RSA ``n`` and ``e`` in the minimum number of octets (Base64urlUInt, RFC 7518 §2,
§6.3.1) and EC ``x`` and ``y`` the full coordinate length (§6.2.1.2, §6.2.1.3). A key that
breaks an encoding rule raises :class:`JwkEncodingError` (``malformed``: the message is not
a JWK, as Boulder answers when go-jose cannot parse it); a key we do not accept raises
:class:`JwkError` (``badPublicKey``, RFC 8555 §6.2). Because the members sent are the members
josepy writes, josepy's thumbprint is the thumbprint over what the client sent, the one every
account was stored under.

Verification never takes a key from here implicitly: :mod:`acme_ca.acme.jws` verifies with
the explicit :attr:`Jwk.key` its caller resolved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWKEC, JWKRSA

from acme_ca.acme.b64 import b64url_decode, b64url_encode

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

#: Accepted curves and their coordinate length in octets (RFC 7518 §6.2.1.2).
_CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
_CURVE_NAMES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_REQUIRED = {"RSA": ("n", "e"), "EC": ("crv", "x", "y")}


class JwkError(ValueError):
    """The JWK is private or of a key we do not accept (``badPublicKey``)."""


class JwkEncodingError(JwkError):
    """The JWK breaks an encoding rule of RFC 7517/7518 (``malformed``)."""


@dataclass(frozen=True)
class Jwk:
    """A public account key: the cryptography key verification uses, its public members
    sorted by name (those sent, which are those josepy writes) and josepy's JWK of it."""

    key: PublicKey = field(compare=False)
    members: tuple[tuple[str, str], ...]

    @cached_property
    def jose(self) -> JWKRSA | JWKEC:
        """josepy's JWK, made when first needed (a thumbprint): most reads never need it."""
        if isinstance(self.key, rsa.RSAPublicKey):
            return JWKRSA(key=self.key)
        return JWKEC(key=self.key)

    @property
    def kty(self) -> str:
        return "RSA" if isinstance(self.key, rsa.RSAPublicKey) else "EC"

    @property
    def curve(self) -> str | None:
        return dict(self.members).get("crv")

    def to_json(self) -> dict[str, str]:
        return dict(self.members)

    @cached_property
    def _thumbprint(self) -> bytes:
        digest: bytes = self.jose.thumbprint()
        return digest

    def thumbprint(self) -> bytes:
        """RFC 7638 SHA-256 thumbprint (josepy's), over the members in lexical order;
        computed once, when first asked (a stored account carries its own)."""
        return self._thumbprint

    def thumbprint_b64(self) -> str:
        return b64url_encode(self.thumbprint())


def _checked_members(data: object, *, minimal: bool = True) -> tuple[dict[str, str], PublicKey]:
    """``kty`` and its required members, each a non-empty canonical unpadded base64url
    string in the encoding RFC 7518 prescribes (``minimal``: RSA members in the fewest
    octets), and the cryptography key they make."""
    if not isinstance(data, Mapping):
        raise JwkEncodingError("JWK must be a JSON object")
    if _PRIVATE_MEMBERS & data.keys():
        raise JwkError("JWK contains private key material")
    kty = data.get("kty")
    if not isinstance(kty, str) or not kty:
        raise JwkEncodingError("JWK member 'kty' is missing or not a string")
    if kty not in _REQUIRED:
        raise JwkError(f"unsupported key type {kty!r}; accepted: RSA, EC")
    members = {"kty": kty}
    for name in _REQUIRED[kty]:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise JwkEncodingError(f"JWK member {name!r} is missing or not a string")
        members[name] = value
    crv = members.get("crv")
    if kty == "EC" and crv not in _CURVES:
        raise JwkError(f"unsupported curve {crv!r}; accepted: P-256, P-384, P-521")
    raw: dict[str, bytes] = {}
    for name in ("n", "e") if kty == "RSA" else ("x", "y"):
        try:
            raw[name] = b64url_decode(members[name])
        except ValueError:
            raise JwkEncodingError(f"JWK member {name!r} is not unpadded base64url") from None
        if b64url_encode(raw[name]) != members[name]:  # stray bits after the last octet
            raise JwkEncodingError(f"JWK member {name!r} is not canonical base64url")
        if kty == "RSA" and minimal and raw[name][:1] == b"\x00":
            raise JwkEncodingError(
                f"JWK member {name!r} has a leading zero octet: a Base64urlUInt must use the "
                "minimum number of octets (RFC 7518 §2, §6.3.1)"
            )
        if crv is not None and len(raw[name]) != _CURVES[crv][1]:
            raise JwkEncodingError(
                f"JWK member {name!r} must be the full {crv} coordinate length, "
                f"{_CURVES[crv][1]} octets (RFC 7518 §6.2.1.2, §6.2.1.3)"
            )
    try:
        if crv is None:
            n, e = (int.from_bytes(raw[m], "big") for m in ("n", "e"))
            return members, rsa.RSAPublicNumbers(e, n).public_key()
        point = b"\x04" + raw["x"] + raw["y"]
        return members, ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[crv][0], point)
    except ValueError as exc:
        raise JwkError(f"invalid {'RSA key' if crv is None else 'EC point'}: {exc}") from None


def parse_jwk(data: object) -> Jwk:
    """Parse a public JWK from a request; :class:`JwkError` on anything unexpected.

    The members checked are those josepy writes for the key, so josepy's type is built from
    the key, without decoding the members a second time."""
    members, key = _checked_members(data)
    return Jwk(key, tuple(sorted(members.items())))


def parse_stored_jwk(data: object) -> Jwk:
    """Parse a JWK stored with an account. A key accepted before the encoding rules were
    enforced (an RSA member with a leading zero octet) is read all the same: its account
    keeps the thumbprint stored with it, and a request signed with ``kid`` still verifies."""
    try:
        return parse_jwk(data)
    except JwkEncodingError:
        if not isinstance(data, Mapping) or data.get("kty") != "RSA":
            raise
    return jwk_from_key(_checked_members(data, minimal=False)[1])


def jwk_from_key(key: PublicKey) -> Jwk:
    """The JWK of a cryptography public key, as josepy writes it."""
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in _CURVE_NAMES:
        raise JwkError(f"unsupported curve {key.curve.name}")
    jose = JWKRSA(key=key) if isinstance(key, rsa.RSAPublicKey) else JWKEC(key=key)
    return Jwk(key, tuple(sorted(jose.to_json().items())))
