"""Every JWS rule of RFC 8555 §6.2-6.5 enforced by the front end, one negative case per row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from acme_ca.acme.b64 import b64url_decode, b64url_encode
from acme_ca.clock import FixedClock
from tests.fixtures import CaFactory, RunningCa
from tests.support.jws import JwsClient, PrivateKey, Reply, jwk_json, make_jws
from tests.support.problems import assert_problem


@pytest.fixture
async def client(ca: RunningCa, session: aiohttp.ClientSession) -> JwsClient:
    c = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    await c.load_directory()
    reply = await c.register(contact=["mailto:ops@example.test"])
    assert reply.status == 201
    return c


async def test_acme_jws_1_unprotected_header_rejected(client: JwsClient) -> None:
    jws = make_jws(
        client.key, None, url=client.kid or "", nonce=await client.nonce(), kid=client.kid
    )
    body = {**jws, "header": {"kid": client.kid}}
    assert_problem(await client.post_raw(client.kid or "", json.dumps(body)), 400, "malformed")


async def test_acme_jws_1_general_serialization_rejected(client: JwsClient) -> None:
    jws = make_jws(
        client.key, None, url=client.kid or "", nonce=await client.nonce(), kid=client.kid
    )
    body = {
        "payload": jws["payload"],
        "signatures": [{"protected": jws["protected"], "signature": jws["signature"]}],
    }
    assert_problem(await client.post_raw(client.kid or "", json.dumps(body)), 400, "malformed")


async def test_acme_tr_1_padded_base64_rejected(client: JwsClient) -> None:
    jws = make_jws(
        client.key, None, url=client.kid or "", nonce=await client.nonce(), kid=client.kid
    )
    jws["protected"] += "=" * (-len(jws["protected"]) % 4 or 4)
    assert_problem(await client.post_raw(client.kid or "", json.dumps(jws)), 400, "malformed")


async def test_acme_jws_bad_signature_rejected(client: JwsClient) -> None:
    jws = make_jws(
        client.key, None, url=client.kid or "", nonce=await client.nonce(), kid=client.kid
    )
    other = make_jws(
        ec.generate_private_key(ec.SECP256R1()),
        None,
        url=client.kid or "",
        nonce="x",
        kid=client.kid,
    )
    jws["signature"] = other["signature"]
    assert_problem(await client.post_raw(client.kid or "", json.dumps(jws)), 400, "malformed")


async def test_acme_jws_2_both_jwk_and_kid_rejected(client: JwsClient) -> None:
    reply = await client.post(
        client.kid or "", None, use_jwk=False, extra_protected={"jwk": {"kty": "EC"}}
    )
    assert_problem(reply, 400, "malformed")


async def test_acme_jws_2_missing_nonce_is_bad_nonce(client: JwsClient) -> None:
    jws = make_jws(client.key, None, url=client.kid or "", nonce=None, kid=client.kid)
    assert_problem(await client.post_raw(client.kid or "", json.dumps(jws)), 400, "badNonce")


@pytest.mark.parametrize(
    "alg",
    ["none", "HS256", "RS512", "EdDSA", "PS256"],
    ids=["none", "hs256", "rs512", "eddsa", "ps256"],
)
async def test_acme_jws_3_algorithm_not_allowed(client: JwsClient, alg: str) -> None:
    reply = await client.post(client.kid or "", None, alg=alg)
    assert_problem(reply, 400, "badSignatureAlgorithm")
    assert reply.body["algorithms"] == ["RS256", "ES256", "ES384", "ES512"]


async def test_acme_jws_3_alg_must_match_key(ca: RunningCa, session: aiohttp.ClientSession) -> None:
    c = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP384R1()))
    await c.load_directory()
    reply = await c.post(
        c.directory["newAccount"], {"termsOfServiceAgreed": True}, use_jwk=True, alg="ES256"
    )
    assert_problem(reply, 400, "badSignatureAlgorithm")


async def test_acme_jws_4_small_rsa_key_bad_public_key(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    c = JwsClient(session, ca.directory_url, rsa.generate_private_key(65537, 1024))
    await c.load_directory()
    assert_problem(await c.register(), 400, "badPublicKey")


async def test_acme_jws_5_jwk_where_kid_required(client: JwsClient) -> None:
    reply = await client.post(client.kid or "", None, use_jwk=True)
    assert_problem(reply, 400, "malformed")


async def test_acme_jws_5_kid_where_jwk_required(client: JwsClient) -> None:
    reply = await client.post(
        client.directory["newAccount"], {"termsOfServiceAgreed": True}, use_jwk=False
    )
    assert_problem(reply, 400, "malformed")


async def test_acme_jws_5_unknown_kid_account_does_not_exist(client: JwsClient) -> None:
    client.kid = (client.kid or "").rsplit("/", 1)[0] + "/999999"
    reply = await client.post(client.directory["newOrder"], {"identifiers": []})
    assert_problem(reply, 400, "accountDoesNotExist")


async def test_acme_jws_5_foreign_kid_url_account_does_not_exist(client: JwsClient) -> None:
    client.kid = "https://elsewhere.example/acme/acct/1"
    reply = await client.post(client.directory["newOrder"], {"identifiers": []})
    assert_problem(reply, 400, "accountDoesNotExist")


async def test_acme_jws_6_wrong_content_type_415(client: JwsClient) -> None:
    jws = make_jws(
        client.key, None, url=client.kid or "", nonce=await client.nonce(), kid=client.kid
    )
    reply = await client.post_raw(client.kid or "", json.dumps(jws), "application/json")
    assert_problem(reply, 415, "malformed")


async def test_acme_jws_7_url_mismatch(client: JwsClient) -> None:
    reply = await client.post(client.kid or "", None, signed_url=client.directory["newOrder"])
    assert_problem(reply, 403, "unauthorized")


async def test_acme_jws_7_url_host_must_match_configured_base(
    client: JwsClient, ca: RunningCa
) -> None:
    """The Host header is never trusted: a url naming another host fails even if routed here."""
    wrong = (client.kid or "").replace("127.0.0.1", "localhost")
    reply = await client.post(client.kid or "", None, signed_url=wrong)
    assert_problem(reply, 403, "unauthorized")


async def test_acme_nonce_2_replayed_nonce(client: JwsClient) -> None:
    nonce = await client.nonce()
    first = await client.post(client.kid or "", None, nonce=nonce)
    assert first.status == 200
    replay = await client.post(client.kid or "", None, nonce=nonce)
    assert_problem(replay, 400, "badNonce")
    fresh = replay.headers["Replay-Nonce"]
    retried = await client.post(client.kid or "", None, nonce=fresh)
    assert retried.status == 200


@pytest.mark.parametrize(
    "nonce",
    ["AQAAAABrBDm5Ip7C35QDSzy9I4Zs5xpAWsPnl7wB4X9G7G5a1DTMvK0", "not+base64", "short", "AAAA="],
    ids=["forged-mac", "bad-alphabet", "too-short", "padded"],
)
async def test_acme_nonce_1_unknown_or_malformed_nonce(client: JwsClient, nonce: str) -> None:
    assert_problem(await client.post(client.kid or "", None, nonce=nonce), 400, "badNonce")


async def test_acme_nonce_1_expired_nonce(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> None:
    clock = FixedClock(datetime.now(UTC))
    ca = await ca_factory.start(clock=clock, nonce_lifetime_seconds=60)
    c = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    await c.load_directory()
    nonce = await c.nonce()
    clock.advance(timedelta(seconds=61))
    reply = await c.post(
        c.directory["newAccount"], {"termsOfServiceAgreed": True}, nonce=nonce, use_jwk=True
    )
    assert_problem(reply, 400, "badNonce")


async def test_acme_nonce_3_nonce_on_success_and_error(client: JwsClient) -> None:
    ok = await client.post(client.kid or "", None)
    assert ok.status == 200 and ok.headers["Replay-Nonce"]
    bad = await client.post(client.kid or "", {"contact": ["ftp://example.test"]})
    assert bad.status == 400 and bad.headers["Replay-Nonce"]


async def test_request_body_over_limit_413(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> None:
    ca = await ca_factory.start(max_request_bytes=2000)
    c = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    await c.load_directory()
    reply = await c.post(
        c.directory["newAccount"], {"termsOfServiceAgreed": True, "pad": "x" * 4000}, use_jwk=True
    )
    assert_problem(reply, 413, "malformed")


async def test_acme_acct_6_deactivated_account_unauthorized_401(client: JwsClient) -> None:
    reply = await client.post(client.kid or "", {"status": "deactivated"})
    assert reply.status == 200 and reply.body["status"] == "deactivated"
    after = await client.post(client.kid or "", None)
    assert_problem(after, 401, "unauthorized")
    again = await client.post(
        client.directory["newAccount"], {"termsOfServiceAgreed": True}, use_jwk=True
    )
    assert_problem(again, 401, "unauthorized")


async def test_acme_get_2_post_as_get_payload_must_be_empty_string(client: JwsClient) -> None:
    """A POST-as-GET carries the empty payload; ``{}`` on the orders list is not one."""
    orders_url = (await client.post(client.kid or "", None)).body["orders"]
    assert (await client.post(orders_url, None)).status == 200
    assert_problem(await client.post(orders_url, {}), 400, "malformed")


async def test_request_not_json_is_malformed(client: JwsClient) -> None:
    assert_problem(await client.post_raw(client.kid or "", b"\xff\x00garbage"), 400, "malformed")


async def test_payload_not_object_is_malformed(client: JwsClient) -> None:
    reply = await client.post(client.kid or "", b'["not", "an", "object"]')
    assert_problem(reply, 400, "malformed")


async def test_protected_header_not_json_is_malformed(client: JwsClient) -> None:
    jws = make_jws(
        client.key, None, url=client.kid or "", nonce=await client.nonce(), kid=client.kid
    )
    jws["protected"] = b64url_encode(b"{not json")
    assert_problem(await client.post_raw(client.kid or "", json.dumps(jws)), 400, "malformed")


async def _new_account_with_jwk(
    ca: RunningCa, session: aiohttp.ClientSession, key: PrivateKey, jwk: dict[str, str]
) -> Reply:
    """newAccount signed by ``key`` but carrying ``jwk`` (the same key, spelled otherwise)."""
    c = JwsClient(session, ca.directory_url, key)
    await c.load_directory()
    url = c.directory["newAccount"]
    jws = make_jws(
        key,
        {"termsOfServiceAgreed": True},
        url=url,
        nonce=await c.nonce(),
        extra_protected={"jwk": jwk},
    )
    return await c.post_raw(url, json.dumps(jws))


async def test_rfc7518_2_rsa_jwk_with_a_leading_zero_octet_malformed(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    """A valid signature by the key, but ``n`` not in the minimum number of octets (RFC 7518
    §2, §6.3.1): not a JWK, so ``malformed``, and no account is made."""
    key = rsa.generate_private_key(65537, 2048)
    jwk = jwk_json(key)
    jwk["n"] = b64url_encode(b"\x00" + b64url_decode(jwk["n"]))
    reply = await _new_account_with_jwk(ca, session, key, jwk)
    assert_problem(reply, 400, "malformed")
    assert "minimum number of octets" in reply.body["detail"]
    assert (await _new_account_with_jwk(ca, session, key, jwk_json(key))).status == 201


async def test_rfc7518_6_2_1_2_ec_jwk_coordinate_wrong_length_malformed(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = jwk_json(key)
    jwk["y"] = b64url_encode(b"\x00" + b64url_decode(jwk["y"]))
    reply = await _new_account_with_jwk(ca, session, key, jwk)
    assert_problem(reply, 400, "malformed")
    assert "P-384 coordinate length" in reply.body["detail"]
