"""Rate limits in PostgreSQL (acme_ca/ra/ratelimits.py, acme_ca/db/ratelimits.py;
docs/operations.md "Rate limits"): each limit reached, answered ``rateLimited`` with
``Retry-After`` and a detail naming the limit; GCRA refilling with time; concurrent requests
never exceeding a bucket; the ARI exemption; overrides through ``acme-ca admin limits``;
off in test mode unless asked for."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca import metrics
from acme_ca.acme import ari
from acme_ca.acme.b64 import b64url_encode
from acme_ca.acme.problems import AcmeError
from acme_ca.cli_limits import LIMIT_NAMES
from acme_ca.clock import FixedClock
from acme_ca.config import Config
from acme_ca.db.ratelimits import Override, RateLimitRepository
from acme_ca.ra.ratelimits import (
    DEFAULT_LIMITS,
    Limit,
    LimitSpec,
    RateLimiter,
    address_range,
    bucket_key,
    domain_of,
    name_set_key,
)
from acme_ca.testsrv.server import ChallengeTestServer
from tests.fixtures import CaFactory
from tests.support.cli import run_cli
from tests.support.jws import JwsClient
from tests.support.orders import Subscriber, subscriber, validation_config
from tests.support.revocation import account_id_of, make_issuer, make_leaf, store_certificate
from tests.support.worker import build_csr

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
RATE_LIMITED = "urn:ietf:params:acme:error:rateLimited"


def limiter(pool: asyncpg.Pool, clock: FixedClock, **sizes: tuple[int, timedelta]) -> RateLimiter:
    limits = dict(DEFAULT_LIMITS)
    for name, (count, period) in sizes.items():
        limits[Limit(name)] = LimitSpec(count, period, DEFAULT_LIMITS[Limit(name)].what)
    return RateLimiter(RateLimitRepository(pool), clock, limits)


async def refused(call: Awaitable[None]) -> AcmeError:
    with pytest.raises(AcmeError) as caught:
        await call
    assert caught.value.problem.type == RATE_LIMITED
    assert caught.value.problem.status == 429
    # Every refusal says when to come back: Retry-After, and the detail names the limit.
    retry = int(caught.value.headers["Retry-After"])
    assert retry > 0
    detail = caught.value.problem.detail or ""
    assert "(limit " in detail and (
        f"retry after {retry} s, fully reset at " in detail or "overridden to 0" in detail
    ), detail
    return caught.value


async def test_new_orders_per_account_gcra_refuses_then_refills(pool: asyncpg.Pool) -> None:
    """3 per hour: three at once, the fourth refused until one emission interval (20 min)
    has passed; another account is not affected."""
    clock = FixedClock(NOW)
    limits = limiter(pool, clock, new_orders_per_account=(3, timedelta(hours=1)))
    for _ in range(3):
        await limits.new_order(7)
    denied = sample("ratelimits_spend_latency_count", "new_orders_per_account", "denied")
    error = await refused(limits.new_order(7))
    assert error.headers == {"Retry-After": "1200"}
    detail = error.problem.detail
    assert "new_orders_per_account" in detail and "at most 3 per 1 hour(s)" in detail
    assert "for 7" in detail and "fully reset at 2026-12-03T13:00:00+00:00" in detail
    assert sample("ratelimits_spend_latency_count", "new_orders_per_account", "denied") == (
        denied + 1
    )
    await limits.new_order(8)
    clock.advance(timedelta(minutes=19))
    await refused(limits.new_order(7))
    clock.advance(timedelta(minutes=1))
    await limits.new_order(7)
    await refused(limits.new_order(7))


def sample(name: str, limit: str, decision: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, {"limit": limit, "decision": decision})
    return value or 0.0


async def test_concurrent_requests_never_exceed_the_bucket(pool: asyncpg.Pool) -> None:
    """The upsert's row lock serialises requests on one bucket: of 12 at once, exactly 5."""
    limits = limiter(pool, FixedClock(NOW), new_orders_per_account=(5, timedelta(hours=1)))
    results = await asyncio.gather(
        *(limits.new_order(1) for _ in range(12)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 5
    assert all(isinstance(r, AcmeError) for r in results if r is not None)


async def test_certificates_per_domain_counts_registered_domains_ari_renewals_exempt(
    pool: asyncpg.Pool,
) -> None:
    clock = FixedClock(NOW)
    limits = limiter(pool, clock, certificates_per_domain=(2, timedelta(days=7)))
    await limits.issuance(["www.example.com"], replaces=False)
    await limits.issuance(["api.example.com", "example.org"], replaces=False)
    error = await refused(limits.issuance(["shop.EXAMPLE.com"], replaces=False))
    assert "certificates_per_domain" in error.problem.detail
    assert "for example.com" in error.problem.detail
    # The refused request charged nothing: example.org still has its second certificate.
    await limits.issuance(["other.example.org"], replaces=False)
    # A renewal that sends ARI `replaces` is not counted against the domain (RFC 9773).
    await limits.issuance(["shop.example.com"], replaces=True)
    await refused(limits.issuance(["shop2.example.com"], replaces=False))
    assert domain_of("*.a.b.example.co.uk") == "example.co.uk"


async def test_duplicate_certificates_same_name_set_in_any_order(pool: asyncpg.Pool) -> None:
    limits = limiter(pool, FixedClock(NOW), duplicate_certificates=(2, timedelta(days=7)))
    await limits.issuance(["a.example.net", "b.example.net"], replaces=True)
    await limits.issuance(["B.example.net", "a.example.net."], replaces=True)
    error = await refused(limits.issuance(["b.example.net", "a.example.net"], replaces=True))
    assert "duplicate_certificates" in error.problem.detail
    await limits.issuance(["a.example.net"], replaces=True)  # another set
    assert name_set_key(["b.x", "A.x"]) == name_set_key(["a.x", "b.x"])


async def test_overrides_change_count_and_period_and_zero_blocks(pool: asyncpg.Pool) -> None:
    repo = RateLimitRepository(pool)
    limits = limiter(pool, FixedClock(NOW))
    await repo.set_override(
        Override("new_orders_per_account", "9", 1, 60, "ticket 1", "operator:t", NOW)
    )
    await limits.new_order(9)
    error = await refused(limits.new_order(9))
    assert error.headers == {"Retry-After": "60"}
    await limits.new_order(10)  # default 300 per 3 h for everyone else
    await repo.set_override(Override("new_orders_per_account", "10", 0, 60, "", "op", NOW))
    blocked = await refused(limits.new_order(10))
    assert "overridden to 0" in blocked.problem.detail
    assert await repo.clear_override("new_orders_per_account", "9", actor="op", now=NOW)
    assert not await repo.clear_override("new_orders_per_account", "9", actor="op", now=NOW)
    events = await pool.fetch(
        "SELECT event, actor FROM audit_events WHERE event LIKE 'ratelimit.%' ORDER BY id"
    )
    assert [(e["event"], e["actor"]) for e in events] == [
        ("ratelimit.override_set", "operator:t"),
        ("ratelimit.override_set", "op"),
        ("ratelimit.override_cleared", "op"),
    ]


async def test_full_buckets_are_purged(pool: asyncpg.Pool) -> None:
    clock = FixedClock(NOW)
    limits = limiter(pool, clock, new_orders_per_account=(2, timedelta(hours=1)))
    await limits.new_order(1)
    await limits.new_order(2)
    clock.advance(timedelta(minutes=31))
    assert await limits.purge() == 2
    assert await pool.fetchval("SELECT count(*) FROM rate_limit_buckets") == 0


async def test_new_accounts_per_ip_range_over_http(
    ca_factory: CaFactory, pool: asyncpg.Pool
) -> None:
    """127.0.0.1/32 overridden to one new account per hour: a second key is refused with
    Retry-After; an existing account is still found (nothing is created)."""
    ca = await ca_factory.start(rate_limits=True)
    await RateLimitRepository(pool).set_override(
        Override("new_accounts_per_ip_range", "127.0.0.1/32", 1, 3600, "", "op", NOW)
    )
    async with aiohttp.ClientSession() as session:
        first = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
        await first.load_directory()
        assert (await first.register()).status == 201
        again = await first.post(
            first.directory["newAccount"], {"onlyReturnExisting": True}, use_jwk=True
        )
        assert again.status == 200
        second = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
        await second.load_directory()
        reply = await second.register()
    assert reply.status == 429, reply.body
    assert reply.body["type"] == RATE_LIMITED
    assert "new_accounts_per_ip_range" in reply.body["detail"]
    assert 3500 < int(reply.headers["Retry-After"]) <= 3600


async def test_new_orders_and_failed_validations_over_http(
    ca_factory: CaFactory,
    challsrv: ChallengeTestServer,
    session: aiohttp.ClientSession,
    pool: asyncpg.Pool,
) -> None:
    """One failed validation allowed per hour for this account and name (override): after
    it, starting another challenge for the name is refused; new orders per account overridden
    to 2: the third newOrder is refused."""
    ca = await ca_factory.start(rate_limits=True, **validation_config(challsrv))
    sub = await subscriber(ca, session, challsrv)
    account = int(sub.account_url.rsplit("/", 1)[1])
    repo = RateLimitRepository(pool)
    await repo.set_override(
        Override("failed_validations", f"{account}:fail.example.com", 1, 3600, "", "o", NOW)
    )
    await repo.set_override(Override("new_orders_per_account", str(account), 2, 3600, "", "o", NOW))
    first = await sub.new_order("fail.example.com")
    assert first.status == 201
    authz = first.body["authorizations"][0]
    chall = next(c for c in (await sub.get(authz)).body["challenges"] if c["type"] == "http-01")
    await sub.post(chall["url"], {})  # nothing served at the token: the validation fails
    assert (await sub.wait_authz(authz))["status"] == "invalid"

    second = await sub.new_order("fail.example.com")
    assert second.status == 201
    authz2 = second.body["authorizations"][0]
    chall2 = next(c for c in (await sub.get(authz2)).body["challenges"] if c["type"] == "http-01")
    started = await sub.post(chall2["url"], {})
    assert started.status == 429, started.body
    assert started.body["type"] == RATE_LIMITED
    assert "failed_validations" in started.body["detail"]
    assert int(started.headers["Retry-After"]) > 3000
    assert (await sub.get(authz2)).body["status"] == "pending"  # nothing was started

    third = await sub.new_order("other.example.com")
    assert third.status == 429
    assert "new_orders_per_account" in third.body["detail"]
    assert int(third.headers["Retry-After"]) > 0


def test_limits_off_in_test_mode_unless_asked() -> None:
    assert Config().rate_limits_enabled
    assert not Config(test_mode=True).rate_limits_enabled
    assert Config(test_mode=True, rate_limits=True).rate_limits_enabled
    assert not Config(rate_limits=False).rate_limits_enabled


def test_admin_limit_names_and_keys() -> None:
    assert tuple(limit.value for limit in Limit) == LIMIT_NAMES
    assert bucket_key(Limit.NEW_ACCOUNTS_PER_IP_RANGE, "2001:db8:1:2::5") == "2001:db8:1::/48"
    assert address_range("::ffff:192.0.2.7") == "192.0.2.7/32"
    assert bucket_key(Limit.CERTIFICATES_PER_DOMAIN, "www.Example.COM") == "example.com"
    assert bucket_key(Limit.FAILED_VALIDATIONS, "12:WWW.example.com.") == "12:www.example.com"


async def test_admin_limits_set_list_clear_cli(dsn: str, tmp_path: Path) -> None:
    async def admin(*args: str) -> tuple[int, str, str]:
        return await run_cli(dsn, tmp_path, "admin", "limits", *args)

    code, out, err = await admin(
        "set", "certificates_per_domain", "www.example.com", "--count", "500", "--period",
        "7d", "--comment", "ticket 4711", "--actor", "alice",
    )  # fmt: skip
    assert code == 0, err
    assert (
        out.strip() == "override\tcertificates_per_domain\texample.com\tcount=500\tperiod=604800s"
    )
    code, out, err = await admin("list")
    assert code == 0, err
    assert (
        "certificates_per_domain\texample.com\tcount=500\tperiod=604800s\tby=operator:alice" in out
    )
    assert "ticket 4711" in out
    code, out, err = await admin("set", "new_orders_per_account", "not-an-id", "--count", "1",
                                 "--period", "1h")  # fmt: skip
    assert code == 2 and "not a key of this limit" in err
    code, out, err = await admin("clear", "certificates_per_domain", "example.com")
    assert code == 0 and out.startswith("cleared\tcertificates_per_domain\texample.com"), err
    code, out, err = await admin("clear", "certificates_per_domain", "example.com")
    assert code == 1 and "no override" in err


async def ready_order(sub: Subscriber, names: list[str], replaces: str | None = None) -> str:
    """An order for ``names`` validated by http-01 and ready; its URL."""
    payload: dict[str, object] = {"identifiers": [{"type": "dns", "value": n} for n in names]}
    if replaces is not None:
        payload["replaces"] = replaces
    order = await sub.post(sub.directory["newOrder"], payload)
    assert order.status == 201, order.body
    for authz in order.body["authorizations"]:
        await sub.answer(authz, "http-01")
        assert (await sub.wait_authz(authz))["status"] == "valid"
    url: str = order.headers["Location"]
    assert (await sub.wait_order(url))["status"] == "ready"
    return url


async def test_finalize_per_domain_limit_ari_renewal_exempt_over_http(
    ca_factory: CaFactory,
    challsrv: ChallengeTestServer,
    session: aiohttp.ClientSession,
    pool: asyncpg.Pool,
) -> None:
    """example.com blocked (override 0): finalizing a new certificate under it is refused
    with rateLimited naming certificates_per_domain; a renewal that sent ARI ``replaces`` for
    a certificate of the account is queued all the same (RFC 9773; Let's Encrypt's rule)."""
    ca = await ca_factory.start(
        rate_limits=True, finalize_wait_seconds=0, **validation_config(challsrv)
    )
    sub = await subscriber(ca, session, challsrv)
    leaf = make_leaf(make_issuer("Rate limit ARI issuer"), ["renew.example.com"])
    await store_certificate(pool, account_id_of(sub), leaf)
    await RateLimitRepository(pool).set_override(
        Override("certificates_per_domain", "example.com", 0, 7 * 86400, "", "op", NOW)
    )
    fresh = await ready_order(sub, ["fresh.example.com"])
    csr = b64url_encode(build_csr(["fresh.example.com"]))
    refused_reply = await sub.post(fresh + "/finalize", {"csr": csr})
    assert refused_reply.status == 429, refused_reply.body
    assert refused_reply.body["type"] == RATE_LIMITED
    assert "certificates_per_domain" in refused_reply.body["detail"]
    assert "for example.com" in refused_reply.body["detail"]
    assert int(refused_reply.headers["Retry-After"]) == 7 * 86400
    assert (await sub.get(fresh)).body["status"] == "ready"  # nothing queued

    renewal = await ready_order(sub, ["renew.example.com"], replaces=ari.cert_id_of(leaf.cert))
    csr = b64url_encode(build_csr(["renew.example.com"]))
    queued = await sub.post(renewal + "/finalize", {"csr": csr})
    assert queued.status == 200, queued.body
    assert queued.body["status"] == "processing"


async def test_finalize_duplicate_certificates_limit_over_http(
    ca_factory: CaFactory,
    challsrv: ChallengeTestServer,
    session: aiohttp.ClientSession,
    pool: asyncpg.Pool,
) -> None:
    """The name set {dup, www.dup} blocked (override 0, keyed as ``admin limits`` spells it,
    names in any order): its finalize is refused with rateLimited naming
    duplicate_certificates, with Retry-After, and nothing is queued; another set of the
    same domain is not this bucket."""
    ca = await ca_factory.start(
        rate_limits=True, finalize_wait_seconds=0, **validation_config(challsrv)
    )
    sub = await subscriber(ca, session, challsrv)
    names = ["www.dup.example.com", "dup.example.com"]
    key = bucket_key(Limit.DUPLICATE_CERTIFICATES, "DUP.example.com, www.dup.example.com")
    await RateLimitRepository(pool).set_override(
        Override("duplicate_certificates", key, 0, 7 * 86400, "", "op", NOW)
    )
    blocked = await ready_order(sub, names)
    reply = await sub.post(blocked + "/finalize", {"csr": b64url_encode(build_csr(names))})
    assert reply.status == 429, reply.body
    assert reply.body["type"] == RATE_LIMITED
    assert "duplicate_certificates" in reply.body["detail"]
    assert int(reply.headers["Retry-After"]) == 7 * 86400
    assert (await sub.get(blocked)).body["status"] == "ready"  # nothing queued

    other = await ready_order(sub, ["dup.example.com"])
    csr = b64url_encode(build_csr(["dup.example.com"]))
    queued = await sub.post(other + "/finalize", {"csr": csr})
    assert queued.status == 200 and queued.body["status"] == "processing", queued.body
