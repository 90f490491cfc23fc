"""JSON Web Keys (RFC 7517/7518) for account keys, and their RFC 7638 thumbprints.

Account keys are josepy's JWK types (``JWKRSA``, ``JWKEC``; no Ed25519, which we do not
accept), parsed by josepy after our own checks: public RSA or EC P-256/P-384/P-521 keys only,
every member a string in unpadded base64url, and the key sent in its one encoding, which is
the encoding josepy writes back: RSA ``n`` and ``e`` in the minimum number of octets
(Base64urlUInt, RFC 7518 §2, §6.3.1) and EC ``x`` and ``y`` the full coordinate length
(§6.2.1.2, §6.2.1.3). A key that breaks an encoding rule raises :class:`JwkEncodingError`
(``malformed``: the message is not a JWK, as Boulder answers when go-jose cannot parse it);
a key we do not support raises :class:`JwkError` (``badPublicKey``, RFC 8555 §6.2). Because
the members sent are the members josepy writes, josepy's thumbprint is the thumbprint over
what the client sent, the one every account was stored under.

Verification never takes a key from here implicitly: :mod:`acme_ca.acme.jws` verifies with
the explicit :attr:`Jwk.key` its caller resolved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.errors import DeserializationError
from josepy.jwk import JWK, JWKEC, JWKRSA

from acme_ca.acme.b64 import b64url_decode, b64url_encode

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

#: Accepted curves and their coordinate length in octets (RFC 7518 §6.2.1.2).
_CURVES: dict[str, int] = {"P-256": 32, "P-384": 48, "P-521": 66}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_REQUIRED = {"RSA": ("n", "e"), "EC": ("crv", "x", "y")}


class JwkError(ValueError):
    """The JWK is private or of a key we do not accept (``badPublicKey``)."""


class JwkEncodingError(JwkError):
    """The JWK breaks an encoding rule of RFC 7517/7518 (``malformed``)."""


@dataclass(frozen=True)
class Jwk:
    """A public account key: josepy's JWK, the cryptography key verification uses, and its
    public members sorted by name (those sent, which are those josepy writes)."""

    jose: JWKRSA | JWKEC = field(compare=False)
    key: PublicKey = field(compare=False)
    members: tuple[tuple[str, str], ...]

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


def _checked_members(data: object) -> tuple[str, dict[str, str]]:
    """``kty`` and its required members, each a non-empty unpadded base64url string."""
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
    if kty == "EC" and members["crv"] not in _CURVES:
        raise JwkError(f"unsupported curve {members['crv']!r}; accepted: P-256, P-384, P-521")
    for name in _REQUIRED[kty]:
        if name == "crv":
            continue
        try:
            raw = b64url_decode(members[name])
        except ValueError:
            raise JwkEncodingError(f"JWK member {name!r} is not unpadded base64url") from None
        if b64url_encode(raw) != members[name]:  # stray bits after the last octet
            raise JwkEncodingError(f"JWK member {name!r} is not canonical base64url")
        if kty == "RSA" and raw[:1] == b"\x00":
            raise JwkEncodingError(
                f"JWK member {name!r} has a leading zero octet: a Base64urlUInt must use the "
                "minimum number of octets (RFC 7518 §2, §6.3.1)"
            )
        if kty == "EC" and len(raw) != _CURVES[members["crv"]]:
            raise JwkEncodingError(
                f"JWK member {name!r} must be the full {members['crv']} coordinate length, "
                f"{_CURVES[members['crv']]} octets (RFC 7518 §6.2.1.2, §6.2.1.3)"
            )
    return kty, members


def _from_members(kty: str, members: dict[str, str], *, canonical: bool = True) -> Jwk:
    """josepy's parse of checked ``members``; ``canonical``: they are what josepy writes."""
    try:
        parsed = JWK.from_json(members)
    except (DeserializationError, ValueError) as exc:  # not on the curve, n/e unusable
        what = "RSA key" if kty == "RSA" else "EC point"
        raise JwkError(f"invalid {what}: {exc}") from None
    assert isinstance(parsed, JWKRSA | JWKEC)  # kty was checked above
    # josepy wraps the cryptography key (Comparable*Key); verification takes the key itself.
    key = parsed.key._wrapped
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    written = members if canonical else parsed.to_json()
    return Jwk(parsed, key, tuple(sorted(written.items())))


def parse_jwk(data: object) -> Jwk:
    """Parse a public JWK from a request; :class:`JwkError` on anything unexpected."""
    kty, members = _checked_members(data)
    return _from_members(kty, members)


def parse_stored_jwk(data: object) -> Jwk:
    """Parse a JWK stored with an account. Keys accepted before the encoding rules were
    enforced (an RSA member with a leading zero octet) are read as they are: their account
    keeps the thumbprint stored with it, and a request signed with ``kid`` still verifies."""
    try:
        return parse_jwk(data)
    except JwkEncodingError:
        if not isinstance(data, Mapping) or data.get("kty") != "RSA":
            raise
    members = {name: data[name] for name in ("kty", *_REQUIRED["RSA"]) if name in data}
    return _from_members("RSA", members, canonical=False)


def jwk_from_key(key: PublicKey) -> Jwk:
    """The JWK of a cryptography public key (used by tests and for stored keys)."""
    if isinstance(key, rsa.RSAPublicKey):
        jose: JWKRSA | JWKEC = JWKRSA(key=key)
    elif key.curve.name in ("secp256r1", "secp384r1", "secp521r1"):
        jose = JWKEC(key=key)
    else:
        raise JwkError(f"unsupported curve {key.curve.name}")
    return Jwk(jose, key, tuple(sorted(jose.to_json().items())))
