"""JWS verification for ACME requests (RFC 8555 §6.2-6.4), following Boulder's checklist.

Two steps, because the key for a ``kid`` request is in the database: :func:`parse_jws` checks
the envelope and protected header without any key, then :func:`verify_jws` checks the
signature with the key the caller resolved and returns a :class:`VerifiedJws`, the only way to
build one.  Only the protected header is ever read; unprotected headers are refused outright.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from acme_ca.acme import problems
from acme_ca.acme.b64 import b64url_decode
from acme_ca.acme.json_limits import loads_limited
from acme_ca.acme.jsontypes import JsonValue
from acme_ca.acme.jwk import Jwk, JwkEncodingError, JwkError, PublicKey, parse_jwk
from acme_ca.acme.problems import AcmeError

#: The signature algorithms we accept, in the order listed to clients.
#: ES512 (P-521) is for account keys only, as in Boulder and Pebble; certificate keys stay
#: P-256/P-384 (``ra/keys.py``).
ALLOWED_ALGORITHMS = ("RS256", "ES256", "ES384", "ES512")
#: Per EC algorithm: the curve, the signature algorithm verification uses (built once: it is
#: immutable) and the length of r and of s in octets.
_EC_ALGS = {
    "ES256": ("secp256r1", ec.ECDSA(hashes.SHA256()), 32),
    "ES384": ("secp384r1", ec.ECDSA(hashes.SHA384()), 48),
    "ES512": ("secp521r1", ec.ECDSA(hashes.SHA512()), 66),
}


def _malformed(detail: str) -> AcmeError:
    return AcmeError(problems.malformed(detail))


@dataclass(frozen=True)
class ParsedJws:
    """A syntactically valid flattened JWS whose signature is not yet checked."""

    alg: str
    nonce: str | None
    url: str
    jwk: Jwk | None
    kid: str | None
    signing_input: bytes
    signature: bytes
    payload_raw: bytes


@dataclass(frozen=True)
class VerifiedJws:
    """A JWS whose signature verified under ``key``; built only by :func:`verify_jws`."""

    parsed: ParsedJws
    key: PublicKey
    _token: object

    @property
    def is_post_as_get(self) -> bool:
        return self.parsed.payload_raw == b""

    def payload_json(self) -> dict[str, JsonValue]:
        """The payload as a JSON object; ``malformed`` if it is not one."""
        value = loads_limited(self.parsed.payload_raw, "JWS payload")
        if not isinstance(value, dict):
            raise _malformed("JWS payload must be a JSON object")
        return value


_VERIFIED = object()


def _decode_part(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise _malformed(f"JWS member {name!r} must be a string")
    try:
        return b64url_decode(value)
    except ValueError:
        raise _malformed(f"JWS member {name!r} is not unpadded base64url") from None


def parse_jws(body: bytes, *, require_nonce: bool = True) -> ParsedJws:  # noqa: C901 -- one early check per RFC 7515/8555 envelope rule
    """Check the envelope and protected header (everything that needs no key)."""
    envelope = loads_limited(body, "request body")
    if not isinstance(envelope, dict):
        raise _malformed("request body must be a flattened JWS object")
    if "signatures" in envelope:
        raise _malformed("JWS general serialization is not allowed; use flattened")
    if "header" in envelope:
        raise _malformed("JWS unprotected header is not allowed")
    if set(envelope) != {"protected", "payload", "signature"}:
        raise _malformed("JWS must have exactly protected, payload and signature")
    protected_b64, payload_b64 = envelope["protected"], envelope["payload"]
    protected_raw = _decode_part(protected_b64, "protected")
    payload_raw = _decode_part(payload_b64, "payload")
    signature = _decode_part(envelope["signature"], "signature")
    if not protected_raw or not signature:
        raise _malformed("JWS protected header and signature must not be empty")
    protected = loads_limited(protected_raw, "JWS protected header")
    if not isinstance(protected, dict):
        raise _malformed("JWS protected header must be a JSON object")

    alg = protected.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise AcmeError(
            problems.bad_signature_algorithm(
                f"JWS algorithm {alg!r} is not accepted", list(ALLOWED_ALGORITHMS)
            )
        )
    if "crit" in protected or "b64" in protected:
        raise _malformed("JWS 'crit' and 'b64' header parameters are not supported")
    nonce = protected.get("nonce")
    if nonce is not None and not isinstance(nonce, str):
        raise AcmeError(problems.bad_nonce("JWS nonce must be a string"))
    if require_nonce and not nonce:
        raise AcmeError(problems.bad_nonce("JWS has no nonce"))
    url = protected.get("url")
    if not isinstance(url, str) or not url:
        raise _malformed("JWS has no url header")
    has_jwk, has_kid = "jwk" in protected, "kid" in protected
    if has_jwk == has_kid:
        raise _malformed("JWS must carry exactly one of 'jwk' and 'kid'")
    jwk: Jwk | None = None
    kid: str | None = None
    if has_jwk:
        try:
            jwk = parse_jwk(protected["jwk"])
        except JwkEncodingError as exc:  # not a JWK at all (RFC 7518 encoding rules)
            raise _malformed(str(exc)) from None
        except JwkError as exc:  # a key we do not accept (RFC 8555 §6.2)
            raise AcmeError(problems.bad_public_key(str(exc))) from None
        check_alg_matches_key(alg, jwk.key)
    else:
        kid = protected["kid"]
        if not isinstance(kid, str) or not kid:
            raise _malformed("JWS kid must be a non-empty string")
    return ParsedJws(
        alg=alg,
        nonce=nonce,
        url=url,
        jwk=jwk,
        kid=kid,
        signing_input=f"{protected_b64}.{payload_b64}".encode("ascii"),
        signature=signature,
        payload_raw=payload_raw,
    )


def check_alg_matches_key(alg: str, key: PublicKey) -> None:
    """The algorithm must suit the key: RS256 for RSA, ES256/ES384/ES512 for P-256/P-384/P-521."""
    if isinstance(key, rsa.RSAPublicKey):
        ok = alg == "RS256"
    else:
        ok = alg in _EC_ALGS and key.curve.name == _EC_ALGS[alg][0]
    if not ok:
        raise AcmeError(
            problems.bad_signature_algorithm(
                f"JWS algorithm {alg} does not match the key type", list(ALLOWED_ALGORITHMS)
            )
        )


def verify_jws(parsed: ParsedJws, key: PublicKey) -> VerifiedJws:
    """Verify the signature under ``key`` (never a key taken from the header by default)."""
    check_alg_matches_key(parsed.alg, key)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(parsed.signature, parsed.signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            _, ecdsa, size = _EC_ALGS[parsed.alg]
            if len(parsed.signature) != 2 * size:
                raise InvalidSignature
            r = int.from_bytes(parsed.signature[:size], "big")
            s = int.from_bytes(parsed.signature[size:], "big")
            key.verify(encode_dss_signature(r, s), parsed.signing_input, ecdsa)
    except InvalidSignature:
        raise _malformed("JWS signature is invalid") from None
    return VerifiedJws(parsed=parsed, key=key, _token=_VERIFIED)


def verify_inner_jws(outer: VerifiedJws) -> VerifiedJws:
    """keyChange's inner JWS (RFC 8555 §7.3.5), the outer payload: no nonce, the new key as
    ``jwk``, the outer ``url``, and a signature by that new key."""
    inner = parse_jws(outer.parsed.payload_raw, require_nonce=False)
    if inner.nonce is not None:
        raise _malformed("keyChange inner JWS must not carry a nonce")
    if inner.jwk is None:
        raise _malformed("keyChange inner JWS must carry the new key as jwk")
    if inner.url != outer.parsed.url:
        raise _malformed("keyChange inner url must equal the outer url")
    return verify_jws(inner, inner.jwk.key)
