"""The front end's account cache (wfe/account_cache.py) never outlives a change of the account.

Two front ends share one database, as two ``acme-ca serve`` processes do. Front end A caches
the account; the change is made through front end B (or by an operator's SQL), so A's cache
is stale, and A must still answer as if it had read the account for this very request:
deactivation (RFC 8555 §7.3.6), key change (§7.3.5) and contact update (§7.3.2).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.acme.jwk import parse_jwk
from acme_ca.acme.status import AccountStatus
from acme_ca.db.accounts import Account
from acme_ca.wfe.account_cache import AccountCache
from acme_ca.wfe.services import FRONT_END
from tests.fixtures import CaFactory, RunningCa
from tests.support.accounts import key_change
from tests.support.jws import JwsClient, PrivateKey, jwk_json
from tests.support.problems import assert_problem


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


async def client_at(
    ca: RunningCa, session: aiohttp.ClientSession, key: PrivateKey, path: str | None = None
) -> JwsClient:
    """A client of ``ca`` signing with ``key``, for the account at ``path`` if given."""
    client = JwsClient(session, ca.directory_url, key)
    await client.load_directory()
    if path is not None:
        client.kid = ca.base_url + path
    return client


def cache_of(ca: RunningCa) -> AccountCache:
    return ca.app[FRONT_END].account_cache


def path_of(client: JwsClient) -> str:
    return "/acme/acct/" + client.account_url.rsplit("/", 1)[1]


async def two_front_ends(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> tuple[RunningCa, RunningCa, JwsClient]:
    """Front ends A and B on one database, and an account whose key A has cached."""
    a, b = await ca_factory.start(), await ca_factory.start()
    client = await client_at(a, session, p256())
    assert (await client.register()).status == 201
    reply = await client.post(client.account_url, None)
    assert reply.status == 200, reply.body
    account_id = int(client.account_url.rsplit("/", 1)[1])
    assert cache_of(a).get(account_id) is not None
    return a, b, client


async def test_account_cache_hit_reads_no_account_row(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> None:
    """A second request of an unchanged account uses the entry the first one cached."""
    a, _, client = await two_front_ends(ca_factory, session)
    account_id = int(client.account_url.rsplit("/", 1)[1])
    entry = cache_of(a).get(account_id)
    assert (await client.post(client.account_url, None)).status == 200
    assert cache_of(a).get(account_id) is entry


async def test_acme_acct_6_deactivated_through_another_front_end_refused_at_once(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> None:
    _, b, client = await two_front_ends(ca_factory, session)
    at_b = await client_at(b, session, client.key, path_of(client))
    reply = await at_b.post(at_b.account_url, {"status": "deactivated"})
    assert reply.status == 200, reply.body
    # A still holds the account as valid; the very next request through A is refused.
    reply = await client.post(client.account_url, None)
    assert_problem(reply, 401, "unauthorized")
    reply = await client.post(client.directory["newOrder"], {"identifiers": []})
    assert_problem(reply, 401, "unauthorized")


async def test_acme_key_2_key_changed_through_another_front_end(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> None:
    a, b, client = await two_front_ends(ca_factory, session)
    at_b = await client_at(b, session, client.key, path_of(client))
    new_key = p256()
    reply = await key_change(at_b, new_key)
    assert reply.status == 200, reply.body
    # A cached the old key: a request signed with it is refused (a signature that does not
    # verify under the account's key is malformed, as without the cache)...
    reply = await client.post(client.account_url, None)
    assert_problem(reply, 400, "malformed")
    # ...and one signed with the new key accepted, from the first request on.
    renewed = await client_at(a, session, new_key, path_of(client))
    reply = await renewed.post(renewed.account_url, None)
    assert reply.status == 200, reply.body
    reply = await client.post(client.account_url, None)
    assert_problem(reply, 400, "malformed")


async def test_acme_key_2_old_key_refused_when_a_changed_key_is_cached(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> None:
    """The other way round: A caches the new key, then the old one is put back by B."""
    _, b, client = await two_front_ends(ca_factory, session)
    old_key, new_key = client.key, p256()
    assert (await key_change(client, new_key)).status == 200
    client.key = new_key
    assert (await client.post(client.account_url, None)).status == 200
    at_b = await client_at(b, session, new_key, path_of(client))
    assert (await key_change(at_b, old_key)).status == 200
    reply = await client.post(client.account_url, None)
    assert_problem(reply, 400, "malformed")
    client.key = old_key
    assert (await client.post(client.account_url, None)).status == 200


async def test_acme_acct_5_contact_changed_by_sql_seen_by_the_next_request(
    ca_factory: CaFactory, session: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    """An operator's UPDATE (no front end involved) moves the row version too."""
    _, _, client = await two_front_ends(ca_factory, session)
    account_id = int(client.account_url.rsplit("/", 1)[1])
    await pool.execute(
        "UPDATE accounts SET contact = $2 WHERE id = $1", account_id, ["mailto:ops@example.com"]
    )
    reply = await client.post(client.account_url, None)
    assert reply.status == 200, reply.body
    assert reply.body["contact"] == ["mailto:ops@example.com"]
    await pool.execute("UPDATE accounts SET status = 'deactivated' WHERE id = $1", account_id)
    assert_problem(await client.post(client.account_url, None), 401, "unauthorized")


def test_account_cache_is_bounded_and_ages_out() -> None:
    def account(n: int) -> Account:
        return Account(
            id=n,
            key_thumbprint=b"",
            jwk=parse_jwk(jwk_json(p256())),
            contact=(),
            status=AccountStatus.VALID,
            tos_agreed_at=None,
            eab_kid=None,
            created_at=datetime.now(UTC),
        )

    cache = AccountCache(max_entries=2)
    cache.put(account(1), "10")
    cache.put(account(2), "11")
    assert cache.get(1) is not None  # 1 is now the most recently used
    cache.put(account(3), "12")
    assert cache.get(2) is None and cache.get(1) is not None and len(cache) == 2
    aged = AccountCache(ttl=-1.0)
    aged.put(account(1), "10")
    assert aged.get(1) is None and len(aged) == 0
