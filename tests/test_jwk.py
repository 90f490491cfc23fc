"""Account keys as josepy JWKs (acme/jwk.py; issue 18 item 1): the encoding rules of RFC 7518
refused as ``malformed``, keys we do not accept as ``badPublicKey``, and thumbprints computed
by josepy equal to the RFC 7638 thumbprints accounts were stored under, so no existing account
changes its thumbprint (its key authorizations, ACME-CHAL-4, and its lookup by key)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWKEC, JWKRSA

from acme_ca.acme.b64 import b64url_decode, b64url_encode
from acme_ca.acme.jwk import (
    JwkEncodingError,
    JwkError,
    PublicKey,
    jwk_from_key,
    parse_jwk,
    parse_stored_jwk,
)
from acme_ca.db.accounts import AccountRepository

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

#: RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_KEY = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo"
    "c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
    "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
    "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def stored_thumbprint(members: dict[str, str]) -> bytes:
    """The thumbprint accounts were stored under before josepy: RFC 7638's canonical JSON of
    the required members exactly as the client sent them."""
    required = ("e", "kty", "n") if members["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: members[k] for k in required}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def ec_key_with_short_x(curve: ec.EllipticCurve) -> ec.EllipticCurvePublicKey:
    """A key whose x coordinate starts with a zero octet (1 in 256 keys)."""
    while True:
        key = ec.generate_private_key(curve).public_key()
        if key.public_numbers().x.bit_length() <= key.curve.key_size - 8:
            return key


def test_rfc7638_3_1_thumbprint_of_the_example_key() -> None:
    jwk = parse_jwk(RFC7638_KEY)
    assert isinstance(jwk.jose, JWKRSA)
    assert jwk.thumbprint_b64() == RFC7638_THUMBPRINT
    assert jwk.to_json() == {k: RFC7638_KEY[k] for k in ("e", "kty", "n")}


@pytest.mark.parametrize(
    "make",
    [
        lambda: rsa.generate_private_key(65537, 2048).public_key(),
        lambda: rsa.generate_private_key(3, 2048).public_key(),
        lambda: ec.generate_private_key(ec.SECP256R1()).public_key(),
        lambda: ec.generate_private_key(ec.SECP384R1()).public_key(),
        lambda: ec.generate_private_key(ec.SECP521R1()).public_key(),  # ES512 (issue 21)
        lambda: ec_key_with_short_x(ec.SECP256R1()),
        lambda: ec_key_with_short_x(ec.SECP521R1()),
    ],
    ids=["rsa2048", "rsa2048-e3", "p256", "p384", "p521", "p256-short-x", "p521-short-x"],
)
def test_acme_chal_4_josepy_thumbprint_equals_the_stored_thumbprint(
    make: Callable[[], PublicKey],
) -> None:
    """What a client such as certbot (josepy) or lego (go-jose) sends parses into josepy's
    type, its thumbprint is the one stored, and josepy writes back exactly what was sent."""
    key = make()
    sent = jwk_from_key(key).to_json()
    jwk = parse_jwk(sent)
    assert isinstance(jwk.jose, JWKRSA if isinstance(key, rsa.RSAPublicKey) else JWKEC)
    assert jwk.thumbprint() == stored_thumbprint(sent)
    assert jwk.jose.to_json() == sent
    assert jwk.key.public_numbers() == key.public_numbers()
    assert jwk == parse_jwk(dict(sent)) and jwk == jwk_from_key(key)


async def test_acme_chal_4_existing_accounts_keep_their_thumbprint(pool: asyncpg.Pool) -> None:
    """Accounts stored before josepy are found by the thumbprint josepy computes for the key
    their client sends, and read back with the key that verifies their requests."""
    keys: list[PublicKey] = [
        rsa.generate_private_key(65537, 2048).public_key(),
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        ec.generate_private_key(ec.SECP521R1()).public_key(),
    ]
    ids = []
    for key in keys:
        sent = jwk_from_key(key).to_json()
        ids.append(
            await pool.fetchval(
                """INSERT INTO accounts (key_thumbprint, jwk, contact, status, created_at,
                                         updated_at)
                   VALUES ($1, $2, '{}', 'valid', $3, $3) RETURNING id""",
                stored_thumbprint(sent),
                sent,
                NOW,
            )
        )
    repo = AccountRepository(pool)
    for account_id, key in zip(ids, keys, strict=True):
        found = await repo.get_by_thumbprint(parse_jwk(jwk_from_key(key).to_json()).thumbprint())
        assert found is not None and found.id == account_id
        assert found.jwk.key.public_numbers() == key.public_numbers()
        assert found.jwk.thumbprint() == found.key_thumbprint


def _with_leading_zero(member: str) -> str:
    return b64url_encode(b"\x00" + b64url_decode(member))


def test_rfc7518_2_rsa_members_with_a_leading_zero_octet_are_malformed() -> None:
    """Base64urlUInt "MUST utilize the minimum number of octets" (RFC 7518 §2, §6.3.1): such
    a key would have a thumbprint other than josepy's, so it is refused."""
    for member in ("n", "e"):
        sent = dict(RFC7638_KEY, **{member: _with_leading_zero(RFC7638_KEY[member])})
        with pytest.raises(JwkEncodingError, match=r"minimum number of octets"):
            parse_jwk(sent)


def test_rfc7518_6_2_1_2_ec_coordinates_of_the_wrong_length_are_malformed() -> None:
    key = ec_key_with_short_x(ec.SECP256R1())
    sent = jwk_from_key(key).to_json()
    raw_x = b64url_decode(sent["x"])
    assert len(raw_x) == 32 and raw_x[0] == 0  # the full length keeps the leading zero
    for x in (b64url_encode(raw_x[1:]), b64url_encode(b"\x00" + raw_x)):  # minimal; too long
        with pytest.raises(JwkEncodingError, match=r"full P-256 coordinate length"):
            parse_jwk(dict(sent, x=x))
    short_y = dict(sent, y=b64url_encode(b64url_decode(sent["y"])[1:]))
    with pytest.raises(JwkEncodingError, match=r"6\.2\.1\.2"):
        parse_jwk(short_y)


def test_rfc7515_2_member_not_canonical_base64url_is_malformed() -> None:
    sent = dict(RFC7638_KEY, n=RFC7638_KEY["n"][:-1] + "x")  # stray bits in the last char
    with pytest.raises(JwkEncodingError, match="canonical"):
        parse_jwk(sent)
    for bad in ("AQAB=", "AQ+B", ""):
        with pytest.raises(JwkEncodingError):
            parse_jwk(dict(RFC7638_KEY, e=bad))


def test_acme_jws_4_keys_we_do_not_accept_are_bad_public_keys() -> None:
    """Not encoding faults: ``badPublicKey`` (JwkError, never JwkEncodingError)."""
    p256 = jwk_from_key(ec.generate_private_key(ec.SECP256R1()).public_key()).to_json()
    cases = [
        {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "oct", "k": "c2VjcmV0"},
        dict(p256, crv="P-192"),
        dict(p256, d="AAAA"),
        dict(p256, y=p256["x"]),  # not on the curve
    ]
    for case in cases:
        with pytest.raises(JwkError) as caught:
            parse_jwk(case)
        assert not isinstance(caught.value, JwkEncodingError), case


def test_stored_key_with_a_leading_zero_is_still_read() -> None:
    """A key stored before the rule (an account keeps its stored thumbprint and its kid
    requests still verify), but never accepted from a request again."""
    key = rsa.generate_private_key(65537, 2048).public_key()
    minimal = jwk_from_key(key).to_json()
    legacy = dict(minimal, n=_with_leading_zero(minimal["n"]))
    with pytest.raises(JwkEncodingError):
        parse_jwk(legacy)
    jwk = parse_stored_jwk(legacy)
    assert jwk.key.public_numbers() == key.public_numbers()
    assert jwk.to_json() == minimal
    with pytest.raises(JwkEncodingError):
        parse_stored_jwk(dict(minimal, kty="EC", crv="P-256", x="AA", y="AA"))
