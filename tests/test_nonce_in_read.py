"""A nonce redeemed in the round trip of the handler's first read (issue 20): POST-as-GET of an
order, authorization, challenge or certificate, a challenge's response and finalize's order.
The nonce is still single-use whether or not the read finds anything (ACME-NONCE-1,
ACME-NONCE-2), the read's answer is never shown for a replay, and an account changed
meanwhile is checked again before it is (RFC 8555 §7.3.6)."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from acme_ca.acme.b64 import b64url_encode
from acme_ca.db.certificates import CertificateRepository
from acme_ca.db.nonces import Redeemed, Redemption
from acme_ca.db.orders import OrderRepository
from acme_ca.testsrv.server import ChallengeTestServer
from acme_ca.testsrv.store import CaaPolicy
from tests.fixtures import CaFactory
from tests.support.orders import Subscriber, subscriber
from tests.support.problems import assert_problem
from tests.support.worker import build_csr, insert_ready_order


async def _redeemed(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM redeemed_nonces")
    return count


async def test_acme_nonce_1_redeemed_with_a_read_once_found_or_not(pool: asyncpg.Pool) -> None:
    """The redemption in a read's statement records the nonce whether the read finds a row or
    not, and only the first of two racing uses of one nonce is fresh."""
    orders, certificates = OrderRepository(pool), CertificateRepository(pool)
    account_id = await pool.fetchval(
        "INSERT INTO accounts (key_thumbprint, jwk, contact, status, created_at, updated_at) "
        "VALUES ('t', '{}', '[]', 'valid', now(), now()) RETURNING id"
    )
    version = await pool.fetchval("SELECT xmin::text FROM accounts WHERE id = $1", account_id)
    expires = datetime.now(UTC) + timedelta(hours=1)
    spent = Redemption(secrets.token_bytes(16), expires, account_id)
    assert await orders.get_order_redeeming(424242, spent) == (None, Redeemed(True, version))
    assert await orders.get_order_redeeming(424242, spent) == (None, Redeemed(False, version))
    assert await certificates.get_redeeming(424242, spent) == (None, Redeemed(False, version))
    gone = Redemption(secrets.token_bytes(16), expires, account_id + 1000)
    assert await orders.get_authorization_redeeming(1, gone) == (None, Redeemed(True, None))
    assert await _redeemed(pool) == 2

    racing = Redemption(secrets.token_bytes(16), expires, account_id)
    outcomes = await asyncio.gather(
        *(orders.get_order_redeeming(1, racing) for _ in range(3)),
        certificates.get_redeeming(1, racing),
    )
    assert sorted(redeemed.fresh for _, redeemed in outcomes) == [False, False, False, True]
    assert await _redeemed(pool) == 3


async def test_acme_nonce_2_post_as_get_and_finalize_refuse_a_replayed_nonce(
    sub: Subscriber, pool: asyncpg.Pool
) -> None:
    """Each read that carries the redemption spends the request's nonce once: the replay is
    ``badNonce`` and shows nothing of the resource; a read that finds nothing (another
    account's order, no such certificate) spends it too."""
    reply = await sub.new_order("replay.example.com")
    assert reply.status == 201, reply.body
    order_url, order = reply.headers["Location"], reply.body
    authz = (await sub.get(order["authorizations"][0])).body
    challenge_url = next(c["url"] for c in authz["challenges"] if c["type"] == "dns-01")
    reads = [
        (order_url, None, 200),
        (order["authorizations"][0], None, 200),
        (challenge_url, None, 200),
        (challenge_url.rsplit("/", 1)[0] + "/424242", {}, 404),
        (order["finalize"], {"csr": "AAAA"}, 403),  # the order is not ready: orderNotReady
        (order_url.rsplit("/", 1)[0] + "/424242", None, 404),
        (order_url.split("/acme/order/")[0] + "/acme/cert/424242", None, 404),
    ]
    for url, payload, status in reads:
        before = await _redeemed(pool)
        nonce = await sub.nonce()
        first = await sub.post(url, payload, nonce=nonce)
        assert first.status == status, (url, first.body)
        assert await _redeemed(pool) == before + 1, url
        replay = await sub.post(url, payload, nonce=nonce)
        body = assert_problem(replay, 400, "badNonce")
        assert "identifiers" not in body and "challenges" not in body
        assert await _redeemed(pool) == before + 1, url


async def test_acme_acct_6_read_with_the_nonce_refused_for_an_account_deactivated_elsewhere(
    ca_factory: CaFactory, session: aiohttp.ClientSession, challsrv: ChallengeTestServer
) -> None:
    """Front end A has the account cached; B deactivates it.  A's POST-as-GET reads the order
    in the nonce's round trip, sees the account's version move, checks the account again and
    answers ``unauthorized``, not the order."""
    a, b = await ca_factory.start(), await ca_factory.start()
    at_a = await subscriber(a, session, challsrv)
    reply = await at_a.new_order("deactivated.example.com")
    assert reply.status == 201, reply.body
    order_url = reply.headers["Location"]
    assert (await at_a.get(order_url)).status == 200  # cached in A
    at_b = Subscriber(session, b.directory_url, at_a.key)
    await at_b.load_directory()
    at_b.kid = b.base_url + "/acme/acct/" + at_a.account_url.rsplit("/", 1)[1]
    assert (await at_b.post(at_b.account_url, {"status": "deactivated"})).status == 200
    for url in (order_url, reply.body["authorizations"][0]):
        refused = await at_a.get(url)
        body = assert_problem(refused, 401, "unauthorized")
        assert "identifiers" not in body and "challenges" not in body


async def test_br_3_2_2_8_finalize_reads_the_validations_its_caa_recheck_uses_with_the_order(
    pool: asyncpg.Pool,
) -> None:
    """Finalize's one statement (nonce, order, validations) gives the CAA recheck the same
    validations, in position order with their methods, as reading them apart would; an
    unknown order gives nothing and still spends the nonce."""
    orders = OrderRepository(pool)
    validated = datetime.now(UTC) - timedelta(hours=9)  # past the 8-hour CAA recheck
    account_id, order_id = await insert_ready_order(
        pool, ["b.example.com", "*.a.example.com", "c.example.com"], validated_at=validated
    )
    redemption = Redemption(
        secrets.token_bytes(16), datetime.now(UTC) + timedelta(hours=1), account_id
    )
    found, redeemed = await orders.get_order_to_finalize_redeeming(order_id, redemption)
    assert redeemed.fresh and found is not None
    order, validations = found
    assert order == await orders.get_order(order_id)
    assert validations == await orders.validations(order_id)
    assert [(v.identifier, v.wildcard, v.method) for v in validations] == [
        ("b.example.com", False, "http-01"),
        ("a.example.com", True, "dns-01"),
        ("c.example.com", False, "http-01"),
    ]
    assert all(v.validated_at == validated for v in validations)
    again = await orders.get_order_to_finalize_redeeming(order_id + 1000, redemption)
    assert again == (None, Redeemed(False, redeemed.account_version))


async def test_br_3_2_2_8_caa_recheck_after_8_hours_at_finalize_on_the_validations_read(
    sub: Subscriber, pool: asyncpg.Pool
) -> None:
    """An authorization validated more than 8 hours ago has its CAA checked again when the
    order is finalized, on the validations read in finalize's first statement: CAA that now
    names another CA refuses the finalize with ``caa`` and queues nothing."""
    name = "recheck-at-finalize.example.com"
    reply = await sub.new_order(name)
    await sub.answer(reply.body["authorizations"][0], "http-01")
    order = await sub.wait_order(reply.headers["Location"])
    assert order["status"] == "ready", order
    authz_id = int(reply.body["authorizations"][0].rsplit("/", 1)[1])
    nine_hours_ago = datetime.now(UTC) - timedelta(hours=9)
    await pool.execute(
        "UPDATE authorizations SET validated_at = $2, caa_checked_at = $2 WHERE id = $1",
        authz_id,
        nine_hours_ago,
    )
    await pool.execute(
        "UPDATE challenges SET validated_at = $2 WHERE authz_id = $1", authz_id, nine_hours_ago
    )
    sub.srv.store.add_caa(name, [CaaPolicy("issue", "letsencrypt.org")])
    csr = b64url_encode(build_csr([name]))
    refused = await sub.post(order["finalize"], {"csr": csr})
    assert_problem(refused, 403, "caa")
    assert not await pool.fetchval(
        "SELECT count(*) FROM issuance_jobs WHERE order_id = $1",
        int(reply.headers["Location"].rsplit("/", 1)[1]),
    )
