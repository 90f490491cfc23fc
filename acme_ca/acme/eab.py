"""External Account Binding (RFC 8555 §7.3.4): the inner HMAC JWS inside newAccount.

Checked in two steps like the outer JWS: :func:`parse_eab` needs no secret and yields the
``kid`` to look up; :func:`verify_eab_mac` then checks the MAC with the stored key.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from acme_ca.acme import problems
from acme_ca.acme.b64 import b64url_decode
from acme_ca.acme.json_limits import loads_limited
from acme_ca.acme.jwk import Jwk, JwkError, parse_jwk
from acme_ca.acme.messages import FlattenedJws
from acme_ca.acme.problems import AcmeError

EAB_ALGORITHMS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


@dataclass(frozen=True)
class ParsedEab:
    kid: str
    alg: str
    signing_input: bytes
    mac: bytes


def _malformed(detail: str) -> AcmeError:
    return AcmeError(problems.malformed(f"externalAccountBinding: {detail}"))


def parse_eab(value: FlattenedJws, *, outer_url: str, outer_jwk: Jwk) -> ParsedEab:
    """Check the binding's form: MAC alg, kid, no nonce, same url, payload = the account key.

    Its shape (exactly protected, payload and signature, all strings) was checked when the
    newAccount message was decoded (:class:`acme_ca.acme.messages.NewAccount`)."""
    try:
        protected_raw = b64url_decode(value.protected)
        payload_raw = b64url_decode(value.payload)
        mac = b64url_decode(value.signature)
        protected = loads_limited(protected_raw, "externalAccountBinding protected header")
        payload = loads_limited(payload_raw, "externalAccountBinding payload")
    except (ValueError, TypeError, UnicodeDecodeError):
        raise _malformed("members must be base64url-encoded JSON") from None
    if not isinstance(protected, dict):
        raise _malformed("protected header must be a JSON object")
    alg = protected.get("alg")
    if alg not in EAB_ALGORITHMS:
        raise _malformed(f"algorithm {alg!r} is not a MAC algorithm we accept (HS256)")
    kid = protected.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _malformed("kid is missing")
    if "nonce" in protected:
        raise _malformed("must not carry a nonce")
    if protected.get("url") != outer_url:
        raise _malformed("url must equal the outer JWS url")
    if "jwk" in protected or "crit" in protected:
        raise _malformed("unexpected header parameters")
    try:
        bound = parse_jwk(payload)
    except JwkError:
        raise _malformed("payload must be the account's public JWK") from None
    if bound.thumbprint() != outer_jwk.thumbprint():
        raise _malformed("payload must equal the outer JWS jwk")
    return ParsedEab(
        kid=kid,
        alg=alg,
        signing_input=f"{value.protected}.{value.payload}".encode("ascii"),
        mac=mac,
    )


def verify_eab_mac(parsed: ParsedEab, hmac_key: bytes) -> None:
    """Raise ``unauthorized`` unless the MAC verifies under the stored key."""
    expected = hmac.new(hmac_key, parsed.signing_input, EAB_ALGORITHMS[parsed.alg]).digest()
    if not hmac.compare_digest(expected, parsed.mac):
        raise AcmeError(problems.unauthorized("externalAccountBinding MAC does not verify"))
