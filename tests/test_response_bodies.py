"""Every ACME resource's answer on the wire: status, protocol headers and the body's exact
field set, against RFC 8555 §6.5-§7.6, RFC 9773 and what Boulder's WFE sends (issue 21 item
12; the differences that stay are listed in docs/testing-with-acme-ca.md).

A field added or dropped by accident fails here, where a client would otherwise find it.
Everything is real: the front end on a real port, real PostgreSQL, the challenge test server.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.acme import ari
from acme_ca.acme.b64 import b64url_encode
from acme_ca.testsrv.server import ChallengeTestServer
from acme_ca.wfe.services import FRONT_END
from tests.fixtures import CaFactory, RunningCa
from tests.support.accounts import key_change
from tests.support.jws import JwsClient, Reply, jwk_json
from tests.support.orders import Subscriber, validation_config
from tests.support.problems import assert_problem
from tests.support.revocation import account_id_of, make_issuer, make_leaf, store_certificate
from tests.support.worker import build_csr

ACCOUNT_FIELDS = {"status", "key", "contact", "orders", "createdAt", "termsOfServiceAgreed"}
ORDER_FIELDS = {"status", "expires", "identifiers", "authorizations", "finalize", "profile"}
AUTHZ_FIELDS = {"identifier", "status", "expires", "challenges"}
TOKEN_CHALLENGE_FIELDS = {"type", "url", "token", "status"}
PROBLEM_FIELDS = {"type", "detail", "status"}


@pytest.fixture
async def va_ca(ca_factory: CaFactory, challsrv: ChallengeTestServer) -> RunningCa:
    """No finalize wait: finalize answers at once (no signing worker runs here)."""
    return await ca_factory.start(finalize_wait_seconds=0, **validation_config(challsrv))


def index_link(client: JwsClient) -> str:
    return f'<{client.directory_url}>;rel="index"'


def assert_acme_json(reply: Reply, client: JwsClient, status: int, fields: set[str]) -> None:
    """A JSON resource: ``status``, exactly ``fields``, and the headers every POST answer
    carries (ACME-NONCE-3 Replay-Nonce, ACME-LINK-1 index, no caching)."""
    assert reply.status == status, reply.body
    assert reply.content_type == "application/json", reply.content_type
    assert set(reply.body) == fields, sorted(reply.body)
    assert reply.headers.get("Replay-Nonce")
    assert index_link(client) in reply.links, reply.links
    assert reply.headers["Cache-Control"] == "no-store"


def is_rfc3339_utc(text: str) -> bool:
    return text.endswith("Z") and datetime.fromisoformat(text[:-1] + "+00:00") is not None


async def registered(ca: RunningCa, session: aiohttp.ClientSession) -> JwsClient:
    client = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    await client.load_directory()
    assert (await client.register(contact=["mailto:admin@example.com"])).status == 201
    return client


# ------------------------------------------------------------------------------------------
# directory and newNonce


async def test_acme_dir_1_directory_exact_fields(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    """§7.1.1: the resources and meta; no Link rel="index" on the directory itself (§7.1),
    no nonce on a GET (Boulder sends none either)."""
    async with session.get(ca.directory_url) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert "Link" not in resp.headers
        assert "Replay-Nonce" not in resp.headers
    assert set(body) == {
        "newNonce",
        "newAccount",
        "newOrder",
        "revokeCert",
        "keyChange",
        "renewalInfo",
        "meta",
    }
    meta = {"caaIdentities", "externalAccountRequired", "termsOfService", "website", "profiles"}
    settings = ca.app[FRONT_END].settings
    if not settings.corroboration:
        meta.add("corroboration")
    if settings.test_mode:
        meta.add("testMode")
    assert set(body["meta"]) == meta
    assert body["renewalInfo"] == ca.base_url + "/acme/renewal-info"  # no trailing slash


async def test_acme_nonce_4_new_nonce_has_no_body(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    """§7.2: HEAD 200, GET 204, both bodiless with Replay-Nonce, no-store and rel="index"."""
    url = ca.base_url + "/acme/new-nonce"
    for method, status in (("HEAD", 200), ("GET", 204)):
        async with session.request(method, url) as resp:
            assert resp.status == status, method
            assert await resp.read() == b""
            assert resp.headers["Replay-Nonce"]
            assert resp.headers["Cache-Control"] == "no-store"
            assert f'<{ca.directory_url}>;rel="index"' in resp.headers.getall("Link")


# ------------------------------------------------------------------------------------------
# accounts


async def test_acme_acct_2_new_account_201_existing_200_only_return_existing(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    """§7.3, §7.3.1: 201 + Location; the same key again 200 + the same Location and the
    stored object; onlyReturnExisting never reflected, and 400 accountDoesNotExist for an
    unknown key."""
    client = await registered(ca, session)
    new_account = client.directory["newAccount"]
    again = await client.post(new_account, {"termsOfServiceAgreed": True}, use_jwk=True)
    assert_acme_json(again, client, 200, ACCOUNT_FIELDS)
    assert again.headers["Location"] == client.account_url
    assert again.body["contact"] == ["mailto:admin@example.com"]
    assert again.body["key"] == jwk_json(client.key)
    assert again.body["orders"] == client.account_url + "/orders"
    assert is_rfc3339_utc(again.body["createdAt"])

    existing = await client.post(new_account, {"onlyReturnExisting": True}, use_jwk=True)
    assert_acme_json(existing, client, 200, ACCOUNT_FIELDS)
    assert existing.headers["Location"] == client.account_url

    stranger = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    stranger.directory = client.directory
    missing = await stranger.post(new_account, {"onlyReturnExisting": True}, use_jwk=True)
    assert set(assert_problem(missing, 400, "accountDoesNotExist")) == PROBLEM_FIELDS
    assert "Location" not in missing.headers

    created = await stranger.register()
    assert_acme_json(created, stranger, 201, ACCOUNT_FIELDS)
    assert created.body["status"] == "valid" and created.body["contact"] == []


async def test_acme_acct_6_account_fetch_update_deactivate(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    """§7.3.2, §7.3.6: POST-as-GET, update and deactivation answer 200 with the account;
    afterwards the account's key gets 401 unauthorized, at its URL and at newAccount."""
    client = await registered(ca, session)
    fetched = await client.post(client.account_url, None)
    assert_acme_json(fetched, client, 200, ACCOUNT_FIELDS)
    assert fetched.headers["Location"] == client.account_url

    updated = await client.post(client.account_url, {"contact": ["mailto:new@example.com"]})
    assert_acme_json(updated, client, 200, ACCOUNT_FIELDS)
    assert updated.body["contact"] == ["mailto:new@example.com"]

    gone = await client.post(client.account_url, {"status": "deactivated"})
    assert_acme_json(gone, client, 200, ACCOUNT_FIELDS)
    assert gone.body["status"] == "deactivated"
    refused = await client.post(client.account_url, None)
    assert set(assert_problem(refused, 401, "unauthorized")) == PROBLEM_FIELDS
    assert index_link(client) in refused.links
    # Its key at newAccount too: 401 as §7.3.6 says (Boulder answers 403), no Location.
    again = await client.post(client.directory["newAccount"], {}, use_jwk=True)
    assert set(assert_problem(again, 401, "unauthorized")) == PROBLEM_FIELDS
    assert "Location" not in again.headers


async def test_acme_key_2_key_change_answers_the_account_with_its_new_key(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    """§7.3.5: 200 with the account object, whose ``key`` is the new key."""
    client = await registered(ca, session)
    new_key = ec.generate_private_key(ec.SECP384R1())
    reply = await key_change(client, new_key)
    assert_acme_json(reply, client, 200, ACCOUNT_FIELDS)
    assert reply.body["key"] == jwk_json(new_key)
    assert reply.headers["Location"] == client.account_url


# ------------------------------------------------------------------------------------------
# orders, authorizations, challenges, finalize


async def test_acme_ord_1_new_order_order_and_orders_list(sub: Subscriber) -> None:
    """§7.4: newOrder 201 + Location; the order (POST-as-GET) 200 with the same fields; the
    account's orders list (§7.1.2.1) is ``{"orders": [...]}`` naming it."""
    created = await sub.new_order("www.example.com")
    assert_acme_json(created, sub, 201, ORDER_FIELDS)
    url = created.headers["Location"]
    assert created.body["status"] == "pending"
    assert created.body["identifiers"] == [{"type": "dns", "value": "www.example.com"}]
    assert is_rfc3339_utc(created.body["expires"])
    assert created.body["finalize"] == url + "/finalize"

    fetched = await sub.get(url)
    assert_acme_json(fetched, sub, 200, ORDER_FIELDS)
    assert fetched.body == created.body

    listed = await sub.get(sub.account_url + "/orders")
    assert_acme_json(listed, sub, 200, {"orders"})
    assert listed.body["orders"] == [url]


async def test_acme_ord_1_orders_list_leaves_out_invalid_orders(
    sub: Subscriber, pool: asyncpg.Pool
) -> None:
    """§7.1.2.1: the list SHOULD include pending orders and SHOULD NOT include invalid ones:
    stored invalid, and pending or ready past ``expires``; a valid order stays listed after
    its ``expires`` (which no longer applies to it)."""
    now = datetime.now(UTC)
    rows = {
        "pending": ("pending", now + timedelta(days=7)),
        "ready": ("ready", now + timedelta(days=7)),
        "valid-old": ("valid", now - timedelta(days=1)),
        "invalid": ("invalid", now + timedelta(days=7)),
        "pending-lapsed": ("pending", now - timedelta(seconds=1)),
        "ready-lapsed": ("ready", now - timedelta(seconds=1)),
    }
    ids = {}
    for label, (status, expires) in rows.items():
        ids[label] = await pool.fetchval(
            """INSERT INTO orders (account_id, status, identifiers, expires_at, created_at,
                                   updated_at)
               VALUES ($1, $2, $3, $4, now(), now()) RETURNING id""",
            account_id_of(sub),
            status,
            [{"type": "dns", "value": "www.example.com"}],
            expires,
        )
    listed = await sub.get(sub.account_url + "/orders")
    assert listed.status == 200, listed.body
    base = sub.directory_url.removesuffix("/directory")
    assert listed.body["orders"] == [
        f"{base}/acme/order/{ids[label]}" for label in ("pending", "ready", "valid-old")
    ]


async def test_acme_authz_2_authorization_fields_and_wildcard_flag(sub: Subscriber) -> None:
    """§7.1.4: identifier without ``*.``, ``wildcard: true`` only on the wildcard's
    authorization (absent, not false, otherwise), ``expires`` in RFC 3339; each challenge
    ``type``/``url``/``token``/``status``; a wildcard offers DNS challenges only.  §7.5.2:
    deactivation answers 200 with the authorization."""
    order = (await sub.new_order("*.wild.example.com", "wild.example.com")).body
    seen = {}
    wildcard_urls: set[str] = set()
    for url in order["authorizations"]:
        reply = await sub.get(url)
        wildcard = bool(reply.body.get("wildcard"))
        assert_acme_json(reply, sub, 200, AUTHZ_FIELDS | ({"wildcard"} if wildcard else set()))
        assert reply.body["identifier"] == {"type": "dns", "value": "wild.example.com"}
        assert reply.body["status"] == "pending"
        assert is_rfc3339_utc(reply.body["expires"])
        for challenge in reply.body["challenges"]:
            if challenge["type"] == "dns-persist-01":
                assert set(challenge) == {
                    "type",
                    "url",
                    "status",
                    "issuer-domain-names",
                    "accounturi",
                }
            else:
                assert set(challenge) == TOKEN_CHALLENGE_FIELDS, challenge
            if wildcard:
                assert challenge["type"].startswith("dns-"), challenge
        seen[wildcard] = reply.body
        if wildcard:
            wildcard_urls.add(url)
    assert set(seen) == {True, False}
    assert seen[True]["wildcard"] is True
    assert any(c["type"] == "http-01" for c in seen[False]["challenges"])

    # §7.5.2: deactivation answers 200 with the authorization, the same fields.
    plain = next(u for u in order["authorizations"] if u not in wildcard_urls)
    gone = await sub.post(plain, {"status": "deactivated"})
    assert_acme_json(gone, sub, 200, AUTHZ_FIELDS)
    assert gone.body["status"] == "deactivated"


async def test_acme_authz_1_invalid_authorization_shows_only_the_failed_challenge(
    sub: Subscriber,
) -> None:
    """§7.1.4: an invalid authorization's ``challenges`` is the challenge that was attempted
    and failed (Boulder, too, drops the others once one was attempted), with its ``error``."""
    order = (await sub.new_order("failed.example.com")).body
    authz_url = order["authorizations"][0]
    pending = (await sub.get(authz_url)).body
    assert len(pending["challenges"]) > 1
    challenge = next(c for c in pending["challenges"] if c["type"] == "http-01")
    sub.srv.store.add_http01(challenge["token"], "not-the-key-authorization")
    await sub.post(challenge["url"], {})
    failed = await sub.wait_authz(authz_url)
    assert failed["status"] == "invalid", failed
    reply = await sub.get(authz_url)
    assert_acme_json(reply, sub, 200, AUTHZ_FIELDS)
    (shown,) = reply.body["challenges"]
    assert shown["url"] == challenge["url"] and shown["status"] == "invalid"
    assert TOKEN_CHALLENGE_FIELDS | {"error"} <= set(shown), shown
    assert set(shown) <= TOKEN_CHALLENGE_FIELDS | {"error", "validated", "validationRecord"}
    assert set(shown["error"]) == PROBLEM_FIELDS


async def test_acme_chal_2_challenge_post_answers_the_challenge_with_up_link(
    sub: Subscriber,
) -> None:
    """§7.5.1: POST ``{}`` answers 200 with the challenge object and Link rel="up" to its
    authorization (certbot refuses the answer without it); once valid it carries
    ``validated`` (§7.1.5, ACME-CHAL-1) and the validation records, as Boulder sends them."""
    order = (await sub.new_order("chal.example.com")).body
    authz_url = order["authorizations"][0]
    reply = await sub.answer(authz_url, "http-01")
    up = f'<{authz_url}>;rel="up"'
    valid_fields = TOKEN_CHALLENGE_FIELDS | {"validated", "validationRecord"}
    fields = valid_fields if reply.body["status"] == "valid" else TOKEN_CHALLENGE_FIELDS
    assert_acme_json(reply, sub, 200, fields)
    assert up in reply.links
    assert reply.body["type"] == "http-01"
    if reply.body["status"] == "processing":
        assert int(reply.headers["Retry-After"]) >= 0
    assert (await sub.wait_authz(authz_url))["status"] == "valid"
    done = await sub.get(reply.body["url"])
    assert_acme_json(done, sub, 200, valid_fields)
    assert up in done.links
    assert done.body["status"] == "valid"
    assert is_rfc3339_utc(done.body["validated"])


async def test_acme_fin_3_finalize_answers_the_order(sub: Subscriber) -> None:
    """§7.4: finalize answers 200 with the updated order, its Location, and Retry-After while
    it is processing (no signing worker runs here, so it stays processing)."""
    created = await sub.new_order("fin.example.com")
    url = created.headers["Location"]
    await sub.answer(created.body["authorizations"][0], "http-01")
    ready = await sub.wait_order(url)
    assert ready["status"] == "ready", ready
    csr = b64url_encode(build_csr(["fin.example.com"]))
    reply = await sub.post(ready["finalize"], {"csr": csr})
    assert_acme_json(reply, sub, 200, ORDER_FIELDS)
    assert reply.headers["Location"] == url
    assert reply.body["status"] == "processing"
    assert int(reply.headers["Retry-After"]) >= 0


# ------------------------------------------------------------------------------------------
# certificate, renewalInfo


async def test_acme_cert_1_download_headers_and_alternates(
    sub: Subscriber, pool: asyncpg.Pool
) -> None:
    """§7.4.2: application/pem-certificate-chain with no parameter (§9.1 defines none), leaf
    first, then the chain; rel="index", rel="up" to the issuer (pkix-cert) and
    rel="alternate" to each other chain, the default chain's URL among them on an
    alternate (Boulder links alternates the same way; it sends no rel="up")."""
    issuer, cross = make_issuer("Chain Issuer"), make_issuer("Alternate Issuer")
    leaf = make_leaf(issuer, ["cert.example.com"])
    cert_id = await store_certificate(pool, account_id_of(sub), leaf)
    pem = serialization.Encoding.PEM
    chain, alternate = (c.cert.public_bytes(pem).decode() for c in (issuer, cross))
    await pool.execute(
        "UPDATE certificates SET chain_pem = $2, alternate_chains = $3 WHERE id = $1",
        cert_id,
        chain,
        [alternate],
    )
    url = sub.directory_url.removesuffix("/directory") + f"/acme/cert/{cert_id}"
    up = f'<{url}/issuer>;rel="up"'

    reply = await sub.get(url)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/pem-certificate-chain"
    assert reply.raw.decode() == leaf.cert.public_bytes(pem).decode() + chain
    assert reply.headers.get("Replay-Nonce")
    assert sorted(reply.links) == sorted([index_link(sub), up, f'<{url}/alt/1>;rel="alternate"'])

    alt = await sub.get(f"{url}/alt/1")
    assert alt.status == 200, alt.body
    assert alt.headers["Content-Type"] == "application/pem-certificate-chain"
    assert alt.raw.decode() == leaf.cert.public_bytes(pem).decode() + alternate
    assert sorted(alt.links) == sorted([index_link(sub), up, f'<{url}>;rel="alternate"'])

    issuer_cert = await sub.get(f"{url}/issuer")
    assert issuer_cert.status == 200
    assert issuer_cert.headers["Content-Type"] == "application/pkix-cert"
    assert issuer_cert.raw == issuer.cert.public_bytes(serialization.Encoding.DER)


async def test_ari_3_renewal_info_body_and_headers(
    sub: Subscriber, pool: asyncpg.Pool, session: aiohttp.ClientSession
) -> None:
    """RFC 9773 §4.2: 200 with exactly ``suggestedWindow`` {start, end} (``explanationURL``
    is optional and not sent), Retry-After, cacheable; a plain GET, so no nonce."""
    leaf = make_leaf(make_issuer(), ["ari.example.com"])
    await store_certificate(pool, account_id_of(sub), leaf)
    url = f"{sub.directory['renewalInfo']}/{ari.cert_id_of(leaf.cert)}"
    async with session.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body: dict[str, Any] = await resp.json()
        assert int(resp.headers["Retry-After"]) > 0
        assert resp.headers["Cache-Control"].startswith("public, max-age=")
        assert index_link(sub) in resp.headers.getall("Link")
        assert "Replay-Nonce" not in resp.headers
    assert set(body) == {"suggestedWindow"}
    assert set(body["suggestedWindow"]) == {"start", "end"}
    assert all(is_rfc3339_utc(v) for v in body["suggestedWindow"].values())


# ------------------------------------------------------------------------------------------
# problem documents


async def test_acme_err_2_problem_documents(sub: Subscriber) -> None:
    """§6.7: application/problem+json whose ``status`` is the HTTP status, with Replay-Nonce
    and rel="index"; per-identifier detail only inside ``subproblems`` (§6.7.1)."""
    base = sub.directory_url.removesuffix("/directory")
    unknown = await sub.get(f"{base}/acme/order/999999")
    assert set(assert_problem(unknown, 404, "malformed")) == PROBLEM_FIELDS
    assert index_link(sub) in unknown.links

    stale = await sub.post(sub.account_url, None, nonce="AAAAAAAAAAAAAAAAAAAAAA")
    assert set(assert_problem(stale, 400, "badNonce")) == PROBLEM_FIELDS

    refused = await sub.new_order("ok.example.com", "nas.local", "*.co.jp")
    body = assert_problem(refused, 400, "rejectedIdentifier")
    assert set(body) == PROBLEM_FIELDS | {"subproblems"}
    assert [s["identifier"]["value"] for s in body["subproblems"]] == ["nas.local", "*.co.jp"]
    for subproblem in body["subproblems"]:
        assert set(subproblem) == PROBLEM_FIELDS | {"identifier"}
        assert subproblem["status"] == 400


async def test_acme_nonce_3_every_post_answer_has_a_fresh_nonce(sub: Subscriber) -> None:
    """§6.5: every POST answer, success or error, carries a new nonce, never one reused."""
    replies = await asyncio.gather(
        sub.get(sub.account_url),
        sub.get(sub.account_url + "/orders"),
        sub.new_order("nonce.example.com"),
        sub.post(sub.account_url, {"contact": "not-a-list"}),
    )
    nonces = [r.headers["Replay-Nonce"] for r in replies]
    assert len(set(nonces)) == len(nonces)
