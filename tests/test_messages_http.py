"""The typed messages wired behind every endpoint: a bad member, over HTTP, is answered with
the problem that names it, and the request changes nothing (RFC 8555 §6.7, §7.3-§7.6)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fixtures import RunningCa
from tests.support.jws import JwsClient, jwk_json, make_jws
from tests.support.problems import ERR

DNS = {"type": "dns", "value": "typed.example.com"}


@pytest.fixture
async def client(ca: RunningCa, session: aiohttp.ClientSession) -> JwsClient:
    c = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    await c.load_directory()
    assert (await c.register(contact=["mailto:typed@example.com"])).status == 201
    return c


async def _order(client: JwsClient) -> dict[str, Any]:
    reply = await client.post(client.directory["newOrder"], {"identifiers": [DNS]})
    assert reply.status == 201, reply.body
    return {"url": reply.headers["Location"], **reply.body}


@pytest.mark.parametrize(
    ("endpoint", "payload", "short_type", "member"),
    [
        pytest.param("newAccount", {"termsOfServiceAgreed": True, "contact": "mailto:a@b.example"},
                     "malformed", "contact", id="acme-acct-1-new-account-contact-string"),
        pytest.param("newAccount", {"termsOfServiceAgreed": "yes"}, "malformed",
                     "termsOfServiceAgreed", id="acme-acct-4-terms-not-boolean"),
        pytest.param("newAccount", {"onlyReturnExisting": 1}, "malformed", "onlyReturnExisting",
                     id="acme-acct-3-only-return-existing-number"),
        pytest.param("account", {"contact": 5}, "malformed", "contact",
                     id="acme-acct-5-update-contact-number"),
        pytest.param("newOrder", {}, "malformed", "identifiers",
                     id="acme-ord-1-identifiers-missing"),
        pytest.param("newOrder", {"identifiers": [{"type": "dns"}]}, "malformed", "identifiers",
                     id="acme-ord-1-identifier-without-value"),
        pytest.param("newOrder", {"identifiers": [DNS], "notAfter": 5}, "malformed", "notAfter",
                     id="acme-ord-2-not-after-number"),
        pytest.param("newOrder", {"identifiers": [DNS], "replaces": 5}, "malformed", "replaces",
                     id="ari-5-replaces-number"),
        pytest.param("finalize", {}, "malformed", "csr", id="acme-fin-2-csr-missing"),
        pytest.param("finalize", {"csr": "MIIB+/=="}, "badCSR", "csr",
                     id="acme-fin-2-csr-not-base64url"),
        pytest.param("authz", {"status": "valid"}, "malformed", "status",
                     id="acme-authz-3-status-not-deactivated"),
        pytest.param("challenge", [], "malformed", "", id="acme-chal-2-payload-array"),
        # keyChange rows change the inner JWS payload; None removes the member
        pytest.param("keyChange", {"account": None}, "malformed", "account",
                     id="acme-key-1-account-missing"),
        pytest.param("keyChange", {"oldKey": "k"}, "malformed", "oldKey",
                     id="acme-key-1-old-key-not-a-jwk"),
        pytest.param("revokeCert", {"certificate": 7}, "malformed", "certificate",
                     id="acme-rev-1-certificate-number"),
        pytest.param("revokeCert", {"certificate": "MIIB", "reason": "1"}, "badRevocationReason",
                     "reason", id="acme-rev-2-reason-string"),
    ],
)  # fmt: skip
async def test_acme_err_1_bad_member_named_over_http(
    client: JwsClient, endpoint: str, payload: Any, short_type: str, member: str
) -> None:
    order = await _order(client)
    authz_url = order["authorizations"][0]
    before = (await client.post(order["url"], None)).body
    kwargs: dict[str, Any] = {}
    if endpoint == "newAccount":
        url = client.directory["newAccount"]
        kwargs = {"key": ec.generate_private_key(ec.SECP256R1()), "use_jwk": True}
    elif endpoint == "account":
        assert client.kid is not None
        url = client.kid
    elif endpoint == "finalize":
        url = order["finalize"]
    elif endpoint == "authz":
        url = authz_url
    elif endpoint == "challenge":
        url = (await client.post(authz_url, None)).body["challenges"][0]["url"]
    elif endpoint == "keyChange":
        url = client.directory["keyChange"]
        new_key = ec.generate_private_key(ec.SECP256R1())
        inner = {"account": client.kid, "oldKey": jwk_json(client.key), **payload}
        inner = {k: v for k, v in inner.items() if v is not None}
        payload = make_jws(new_key, inner, url=url, nonce=None, embed_jwk=True)
    else:
        url = client.directory[endpoint]

    reply = await client.post(url, payload, **kwargs)

    assert reply.status == 400, reply.body
    assert reply.content_type == "application/problem+json"
    assert reply.body["type"] == ERR + short_type, reply.body
    assert f"'{member}'" in reply.body["detail"] or not member, reply.body["detail"]
    assert "Replay-Nonce" in reply.headers
    # nothing moved: the order, its authorization and the account are as before
    assert (await client.post(order["url"], None)).body == before
    assert (await client.post(authz_url, None)).body["status"] == "pending"
    account = await client.post(client.kid or "", None)
    assert account.body["contact"] == ["mailto:typed@example.com"]
