"""Account requests a real client never sends (RFC 8555 §7.3), through ``tests/support/jws.py``.

Terms of service, contact rules, update field handling, account ownership, the paged orders
list, the keyChange checklist (§7.3.5) and refused account keys (§6.2).
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from acme_ca.db.audit import events_for_account
from tests.fixtures import CaFactory, RunningCa
from tests.support.accounts import key_change
from tests.support.jws import JwsClient, PrivateKey, jwk_json
from tests.support.problems import assert_problem

TERMS = "https://jprs.jp/pubcert/info/repository/"
NEXT_LINK = re.compile(r'^<([^>]+)>;rel="next"$')


# --------------------------------------------------------------------------- helpers


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


async def new_client(
    ca: RunningCa, session: aiohttp.ClientSession, key: PrivateKey | None = None
) -> JwsClient:
    client = JwsClient(session, ca.directory_url, key or p256())
    await client.load_directory()
    return client


async def registered(
    ca: RunningCa, session: aiohttp.ClientSession, key: PrivateKey | None = None, **fields: Any
) -> JwsClient:
    client = await new_client(ca, session, key)
    reply = await client.register(**fields)
    assert reply.status == 201, reply.body
    return client


def account_id(client: JwsClient) -> int:
    return int(client.account_url.rsplit("/", 1)[1])


# --------------------------------------------------------------------------- terms of service


@pytest.mark.parametrize("agreed", [None, False], ids=["absent", "false"])
async def test_acme_acct_4_terms_not_agreed_user_action_required(
    ca: RunningCa, session: aiohttp.ClientSession, agreed: bool | None
) -> None:
    client = await new_client(ca, session)
    payload: dict[str, Any] = {"contact": ["mailto:admin@example.com"]}
    if agreed is not None:
        payload["termsOfServiceAgreed"] = agreed
    reply = await client.post(client.directory["newAccount"], payload, use_jwk=True)

    assert_problem(reply, 403, "userActionRequired")
    assert reply.body["instance"] == TERMS
    assert f'<{TERMS}>;rel="terms-of-service"' in reply.links
    assert "Location" not in reply.headers


async def test_acme_acct_4_no_terms_configured_no_agreement_needed(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> None:
    ca = await ca_factory.start(terms_of_service=None)
    client = await new_client(ca, session)
    assert "termsOfService" not in client.directory["meta"]

    reply = await client.post(client.directory["newAccount"], {}, use_jwk=True)
    assert reply.status == 201, reply.body
    assert reply.body["status"] == "valid"
    assert "termsOfServiceAgreed" not in reply.body
    assert not any('rel="terms-of-service"' in link for link in reply.links)


# --------------------------------------------------------------------------- contacts


BAD_CONTACTS = [
    pytest.param(["tel:+81312345678"], "unsupportedContact", id="tel"),
    pytest.param(["https://example.com/contact"], "unsupportedContact", id="https"),
    pytest.param(["admin@example.com"], "unsupportedContact", id="no-scheme"),
    pytest.param(["mailto:a@b@c"], "invalidContact", id="two-at"),
    pytest.param(["mailto:admin@example.com?subject=hello"], "invalidContact", id="hfields"),
    pytest.param(["mailto:a@example.com,b@example.com"], "invalidContact", id="two-addresses"),
    pytest.param(["mailto:admin%40example.com"], "invalidContact", id="pct-encoded"),
    pytest.param(["mailto:admin@localhost"], "invalidContact", id="single-label-domain"),
    pytest.param(["mailto:admin@-bad-.example.com"], "invalidContact", id="hyphen-label"),
    pytest.param(["mailto:admin@exa_mple.com"], "invalidContact", id="underscore-domain"),
    pytest.param(["mailto:admin@192.0.2.1"], "invalidContact", id="ip-literal"),
    pytest.param(["mailto:@example.com"], "invalidContact", id="empty-local"),
    pytest.param(["mailto:a..b@example.com"], "invalidContact", id="double-dot"),
    pytest.param(["mailto:" + "a" * 250 + "@example.com"], "invalidContact", id="too-long"),
    pytest.param(
        [f"mailto:admin{i}@example.com" for i in range(11)], "invalidContact", id="eleven"
    ),
    pytest.param("mailto:admin@example.com", "malformed", id="not-a-list"),
    pytest.param([42], "malformed", id="not-strings"),
]


@pytest.mark.parametrize(("contact", "problem"), BAD_CONTACTS)
async def test_acme_acct_1_contact_rules_on_new_account(
    ca: RunningCa, session: aiohttp.ClientSession, contact: Any, problem: str
) -> None:
    client = await new_client(ca, session)
    reply = await client.register(contact=contact)
    assert_problem(reply, 400, problem)
    assert client.kid is None


@pytest.mark.parametrize(
    ("contact", "problem"),
    [p for p in BAD_CONTACTS if p.id in ("tel", "two-at", "hfields", "two-addresses", "eleven")],
)
async def test_acme_acct_5_contact_rules_on_update(
    ca: RunningCa, session: aiohttp.ClientSession, contact: Any, problem: str
) -> None:
    client = await registered(ca, session, contact=["mailto:keep@example.com"])
    reply = await client.post(client.account_url, {"contact": contact})
    assert_problem(reply, 400, problem)
    current = await client.post(client.account_url, None)
    assert current.body["contact"] == ["mailto:keep@example.com"]


async def test_acme_acct_1_ten_contacts_accepted_and_domain_lowercased(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    contacts = [f"mailto:admin{i}@example.com" for i in range(9)] + ["MAILTO:Ops@Example.COM"]
    client = await new_client(ca, session)
    reply = await client.register(contact=contacts)
    assert reply.status == 201, reply.body
    assert reply.body["contact"] == [*contacts[:9], "mailto:Ops@example.com"]


# --------------------------------------------------------------------------- new account fields


async def test_acme_acct_3_unknown_fields_not_reflected(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    client = await new_client(ca, session)
    reply = await client.register(
        contact=["mailto:admin@example.com"],
        onlyReturnExisting=False,
        orders="https://attacker.example/orders",
        status="deactivated",
        shoeSize=44,
    )
    assert reply.status == 201, reply.body
    assert set(reply.body) == {
        "status",
        "key",
        "contact",
        "orders",
        "createdAt",
        "termsOfServiceAgreed",
    }
    assert reply.body["status"] == "valid"
    assert reply.body["orders"] == client.account_url + "/orders"


async def test_acme_acct_2_existing_account_ignores_request_fields(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    client = await registered(ca, session, contact=["mailto:first@example.com"])
    kid = client.kid
    reply = await client.post(
        client.directory["newAccount"],
        {"contact": ["mailto:other@example.com"], "onlyReturnExisting": True, "x": 1},
        use_jwk=True,
    )
    assert reply.status == 200, reply.body
    assert reply.headers["Location"] == kid
    assert reply.body["contact"] == ["mailto:first@example.com"]
    assert "onlyReturnExisting" not in reply.body and "x" not in reply.body


async def test_acme_jws_5_unknown_kid_account_does_not_exist(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    client = await registered(ca, session)
    client.kid = ca.base_url + "/acme/acct/999999"
    reply = await client.post(client.kid, None)
    assert_problem(reply, 400, "accountDoesNotExist")


# --------------------------------------------------------------------------- account updates


async def test_acme_acct_5_update_ignores_orders_tos_and_unknown_fields(
    ca: RunningCa, session: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    client = await registered(ca, session, contact=["mailto:old@example.com"])
    before = (await client.post(client.account_url, None)).body

    reply = await client.post(
        client.account_url,
        {
            "contact": ["mailto:new@example.com"],
            "orders": "https://attacker.example/orders",
            "termsOfServiceAgreed": False,
            "createdAt": "2000-01-01T00:00:00Z",
            "externalAccountBinding": {"protected": "", "payload": "", "signature": ""},
            "shoeSize": 44,
        },
    )
    assert reply.status == 200, reply.body
    assert reply.headers["Location"] == client.kid
    assert reply.body == {**before, "contact": ["mailto:new@example.com"]}

    # an empty update changes nothing and records nothing
    reply = await client.post(client.kid, {})
    assert reply.status == 200
    assert reply.body == {**before, "contact": ["mailto:new@example.com"]}
    events = [e["event"] for e in await events_for_account(pool, account_id(client))]
    assert events == ["account.created", "account.updated"]


@pytest.mark.parametrize("status", ["valid", "revoked", "pending", 7])
async def test_acme_acct_5_update_status_other_than_deactivated_ignored(
    ca: RunningCa, session: aiohttp.ClientSession, status: Any
) -> None:
    """§7.3.2: the server MUST ignore ``status`` except as allowed by §7.3.6 (deactivation).

    acme-python/certbot send ``"status": "valid"`` with every contact update."""
    client = await registered(ca, session, contact=["mailto:old@example.com"])
    update = {"status": status, "contact": ["mailto:n@example.com"]}
    reply = await client.post(client.account_url, update)
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "valid"
    assert reply.body["contact"] == ["mailto:n@example.com"]
    assert (await client.post(client.account_url, None)).status == 200


async def test_acme_acct_6_deactivated_account_refused_everywhere(
    ca: RunningCa, session: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    client = await registered(ca, session, contact=["mailto:old@example.com"])
    reply = await client.post(client.account_url, {"status": "deactivated"})
    assert reply.status == 200, reply.body
    assert reply.body["status"] == "deactivated"

    for url, payload in (
        (client.account_url, None),
        (client.account_url, {"status": "deactivated"}),
        (client.account_url + "/orders", None),
        (client.directory["keyChange"], {}),
    ):
        assert_problem(await client.post(url, payload), 401, "unauthorized")
    reply = await client.post(client.directory["newAccount"], {}, use_jwk=True)
    assert_problem(reply, 401, "unauthorized")
    events = [e["event"] for e in await events_for_account(pool, account_id(client))]
    assert events == ["account.created", "account.deactivated"]


async def test_acme_get_2_other_accounts_url_unauthorized(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    alice = await registered(ca, session, contact=["mailto:alice@example.com"])
    bob = await registered(ca, session, contact=["mailto:bob@example.com"])

    assert_problem(await alice.post(bob.account_url, None), 403, "unauthorized")
    reply = await alice.post(bob.account_url, {"contact": ["mailto:mallory@example.com"]})
    assert_problem(reply, 403, "unauthorized")
    reply = await alice.post(bob.account_url, {"status": "deactivated"})
    assert_problem(reply, 403, "unauthorized")
    assert_problem(await alice.post(bob.account_url + "/orders", None), 403, "unauthorized")

    # Bob is untouched
    reply = await bob.post(bob.account_url, None)
    assert reply.body["status"] == "valid"
    assert reply.body["contact"] == ["mailto:bob@example.com"]


# --------------------------------------------------------------------------- orders list


async def insert_orders(pool: asyncpg.Pool, account: int, count: int) -> list[int]:
    ids = []
    for i in range(count):
        ids.append(
            await pool.fetchval(
                """INSERT INTO orders (account_id, status, identifiers, expires_at,
                                       created_at, updated_at)
                   VALUES ($1, 'pending', $2, now() + interval '7 days', now(), now())
                   RETURNING id""",
                account,
                [{"type": "dns", "value": f"www{i}.example.com"}],
            )
        )
    return ids


async def walk_orders(client: JwsClient) -> tuple[list[list[str]], list[str | None]]:
    """Follow ``rel="next"`` from the orders URL; return each page and its next link."""
    url: str | None = client.account_url + "/orders"
    pages: list[list[str]] = []
    nexts: list[str | None] = []
    while url is not None:
        reply = await client.post(url, None)
        assert reply.status == 200, reply.body
        assert reply.content_type == "application/json"
        pages.append(reply.body["orders"])
        found = [m.group(1) for link in reply.links if (m := NEXT_LINK.match(link))]
        assert len(found) <= 1
        url = found[0] if found else None
        nexts.append(url)
        assert len(pages) < 20, "paging does not terminate"
    return pages, nexts


async def test_orders_list_paged_with_next_links(
    ca_factory: CaFactory, session: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    ca = await ca_factory.start(orders_page_size=2)
    alice = await registered(ca, session)
    bob = await registered(ca, session)
    mine: list[int] = []
    for _ in range(5):  # interleave so cursors must skip the other account's orders
        mine += await insert_orders(pool, account_id(alice), 1)
        await insert_orders(pool, account_id(bob), 1)

    account = (await alice.post(alice.account_url, None)).body
    assert account["orders"] == alice.account_url + "/orders"

    pages, nexts = await walk_orders(alice)
    order_url = ca.base_url + "/acme/order/{}"
    assert pages == [
        [order_url.format(i) for i in mine[0:2]],
        [order_url.format(i) for i in mine[2:4]],
        [order_url.format(mine[4])],
    ]
    assert nexts == [
        f"{alice.kid}/orders?cursor={mine[1]}",
        f"{alice.kid}/orders?cursor={mine[3]}",
        None,
    ]


async def test_orders_list_exact_multiple_and_empty(
    ca_factory: CaFactory, session: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    ca = await ca_factory.start(orders_page_size=2)
    client = await registered(ca, session)

    pages, nexts = await walk_orders(client)
    assert pages == [[]] and nexts == [None]

    mine = await insert_orders(pool, account_id(client), 4)
    pages, nexts = await walk_orders(client)
    # every order exactly once, in order; the last page has no next link (the server may
    # end with an empty page when the count is a multiple of the page size)
    assert [url for page in pages for url in page] == [
        f"{ca.base_url}/acme/order/{i}" for i in mine
    ]
    assert nexts[-1] is None
    assert all(len(page) == 2 for page in pages[:2])


@pytest.mark.parametrize("cursor", ["-1", "abc", "1" * 19, "1.5"])
async def test_orders_list_bad_cursor_malformed(
    ca: RunningCa, session: aiohttp.ClientSession, cursor: str
) -> None:
    client = await registered(ca, session)
    reply = await client.post(f"{client.kid}/orders?cursor={cursor}", None)
    assert_problem(reply, 400, "malformed")


async def test_orders_list_requires_post_as_get(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    client = await registered(ca, session)
    assert_problem(await client.post(client.account_url + "/orders", {}), 400, "malformed")


# --------------------------------------------------------------------------- keyChange


async def test_acme_key_1_success_with_jws_client(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    client = await registered(ca, session, contact=["mailto:roll@example.com"])
    old_key, new_key = client.key, p256()
    reply = await key_change(client, new_key)
    assert reply.status == 200, reply.body
    assert reply.headers["Location"] == client.kid

    assert (await client.post(client.kid, None, key=new_key)).status == 200
    assert_problem(await client.post(client.kid, None, key=old_key), 400, "malformed")
    lookup = await client.post(
        client.directory["newAccount"], {"onlyReturnExisting": True}, key=old_key, use_jwk=True
    )
    assert_problem(lookup, 400, "accountDoesNotExist")


async def test_acme_acct_1_account_object_carries_its_key_after_rollover(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    """``key`` is the account's JWK in every account response, as Boulder and Pebble send
    it; clients read it after keyChange to see which key the account now holds."""
    client = await new_client(ca, session)
    created = await client.register()
    assert created.status == 201, created.body
    assert created.body["key"] == jwk_json(client.key)
    new_key = p256()
    rolled = await key_change(client, new_key)
    assert rolled.status == 200, rolled.body
    assert rolled.body["key"] == jwk_json(new_key)
    fetched = await client.post(client.account_url, None, key=new_key)
    assert fetched.body["key"] == jwk_json(new_key)


async def test_acme_key_1_inner_nonce_malformed(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    client = await registered(ca, session)
    nonce = await client.nonce()
    reply = await key_change(client, p256(), inner_nonce=nonce)
    assert_problem(reply, 400, "malformed")
    assert "nonce" in reply.body["detail"]


async def test_acme_key_1_inner_url_differs_malformed(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    client = await registered(ca, session)
    reply = await key_change(client, p256(), inner_url=client.kid)
    assert_problem(reply, 400, "malformed")
    assert "url" in reply.body["detail"]


async def test_acme_key_1_account_not_kid_malformed(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    alice = await registered(ca, session)
    bob = await registered(ca, session)
    reply = await key_change(alice, p256(), account=bob.kid)
    assert_problem(reply, 400, "malformed")
    assert "account" in reply.body["detail"]


async def test_acme_key_1_old_key_wrong_unauthorized(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    client = await registered(ca, session)
    reply = await key_change(client, p256(), old_jwk=jwk_json(p256()))
    assert_problem(reply, 403, "unauthorized")


async def test_acme_key_1_inner_not_signed_by_new_key_malformed(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    client = await registered(ca, session)
    reply = await key_change(
        client,
        p256(),
        embed_jwk=False,
        extra_protected={"jwk": jwk_json(p256())},  # claims a key it did not sign with
    )
    assert_problem(reply, 400, "malformed")


async def test_acme_key_1_inner_with_kid_malformed(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    client = await registered(ca, session)
    reply = await key_change(client, p256(), kid=client.kid, embed_jwk=None)
    assert_problem(reply, 400, "malformed")


async def test_acme_key_1_new_key_rsa_1024_bad_public_key(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    client = await registered(ca, session)
    reply = await key_change(client, rsa.generate_private_key(65537, 1024))
    assert_problem(reply, 400, "badPublicKey")
    assert (await client.post(client.account_url, None)).status == 200


async def test_acme_key_2_conflict_409_location(
    ca: RunningCa, session: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    alice = await registered(ca, session)
    bob = await registered(ca, session)

    reply = await key_change(alice, bob.key)
    assert reply.status == 409, reply.body
    assert reply.content_type == "application/problem+json"
    assert reply.headers["Location"] == bob.kid
    assert "Replay-Nonce" in reply.headers

    # nothing changed: both accounts keep their keys
    assert (await alice.post(alice.account_url, None)).status == 200
    assert (await bob.post(bob.kid, None)).status == 200
    events = [e["event"] for e in await events_for_account(pool, account_id(alice))]
    assert "account.key_changed" not in events


async def test_acme_key_2_conflict_with_deactivated_account_key(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    """A deactivated account still holds its key (one key per account, §11.1)."""
    alice = await registered(ca, session)
    bob = await registered(ca, session)
    assert (await bob.post(bob.account_url, {"status": "deactivated"})).status == 200
    reply = await key_change(alice, bob.key)
    assert reply.status == 409, reply.body
    assert reply.headers["Location"] == bob.kid


# --------------------------------------------------------------------------- account keys


async def test_acme_jws_4_rsa_1024_account_key_bad_public_key(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    client = await new_client(ca, session, rsa.generate_private_key(65537, 1024))
    reply = await client.register(contact=["mailto:admin@example.com"])
    assert_problem(reply, 400, "badPublicKey")


async def test_acme_jws_3_es512_p521_account_key_accepted(
    ca: RunningCa, session: aiohttp.ClientSession
) -> None:
    """ES512 with a P-521 account key, as Boulder and Pebble accept: registration, requests
    by kid, and a rollover to and from P-521 (certificate keys stay P-256/P-384)."""
    p521 = ec.generate_private_key(ec.SECP521R1())
    client = await new_client(ca, session, p521)
    url = client.directory["newAccount"]

    # the algorithm must still match the key (ACME-JWS-3): ES256 over a P-521 key is refused
    mismatched = await client.post(url, {"termsOfServiceAgreed": True}, alg="ES256")
    assert_problem(mismatched, 400, "badSignatureAlgorithm")
    assert "ES512" in mismatched.body["algorithms"]

    created = await client.register()
    assert created.status == 201, created.body
    assert created.body["key"]["crv"] == "P-521"
    assert (await client.post(client.account_url, None)).status == 200
    order = await client.post(
        client.directory["newOrder"],
        {"identifiers": [{"type": "dns", "value": "p521.example.com"}]},
    )
    assert order.status == 201, order.body

    p256_key = p256()
    assert (await key_change(client, p256_key)).status == 200
    client.key = p256_key
    back = await key_change(client, ec.generate_private_key(ec.SECP521R1()))
    assert back.status == 200, back.body
    assert back.body["key"]["crv"] == "P-521"
