"""PERSIST-2 / BR-REUSE-1: a dns-persist-01 validation (BR 3.2.2.4.22) is reused for at most
10 days whatever BR 4.2.1's period of the day, both when a new order looks for an authorization
to reuse and when the signing worker rechecks the order before signing (ca/recheck.py).

The CA runs on a FixedClock in December 2026, when BR 4.2.1 allows 200 days; the config's own
reuse period is 30 days.  An http-01 authorization of the same age is the control.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest

from acme_ca.br import max_dcv_reuse
from acme_ca.ca import recheck
from acme_ca.clock import FixedClock
from acme_ca.db.issuance_jobs import AuthorizationEvidence
from acme_ca.db.orders import OrderRepository
from acme_ca.testsrv.server import ChallengeTestServer
from tests.fixtures import CaFactory, RunningCa
from tests.support.orders import Subscriber, subscriber, validation_config
from tests.support.problems import ERR

START = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
METHODS = ["http-01", "dns-01", "dns-persist-01"]


def test_persist_2_reuse_cap_is_ten_days_whatever_the_date() -> None:
    for at in (START, datetime(2027, 6, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)):
        assert max_dcv_reuse(at, "dns-persist-01") == timedelta(days=10)
    assert max_dcv_reuse(START, "http-01") == max_dcv_reuse(START) == timedelta(days=200)


def evidence(method: str, validated_at: datetime) -> AuthorizationEvidence:
    return AuthorizationEvidence(
        authz_id=1,
        identifier="persist.example.com",
        wildcard=False,
        status="valid",
        expires_at=validated_at + timedelta(days=30),
        validated_at=validated_at,
        caa_checked_at=validated_at,
        method=method,
        records=[],
    )


@pytest.mark.parametrize(
    ("method", "age", "refused"),
    [
        ("dns-persist-01", timedelta(days=10), False),
        ("dns-persist-01", timedelta(days=10, seconds=1), True),
        ("http-01", timedelta(days=10, seconds=1), False),
    ],
    ids=["persist-10d", "persist-10d+1s", "http-01-10d+1s"],
)
def test_persist_2_signing_time_recheck_caps_reuse(
    method: str, age: timedelta, refused: bool
) -> None:
    found = recheck.reuse_refusal("persist.example.com", evidence(method, START - age), START)
    assert (found is not None) == refused
    if found is not None:
        assert found.rule == recheck.RULE_REUSE
        assert found.problem.type == ERR + "unauthorized"
        assert "dns-persist-01" in found.problem.detail and "10 days" in found.problem.detail
        assert "BR 3.2.2.4.22" in found.problem.detail


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
async def persist_ca(
    ca_factory: CaFactory, challsrv: ChallengeTestServer, clock: FixedClock
) -> RunningCa:
    return await ca_factory.start(
        clock, challenge_types=METHODS, authz_reuse_days=30, **validation_config(challsrv)
    )


@pytest.fixture
async def client(
    persist_ca: RunningCa, session: aiohttp.ClientSession, challsrv: ChallengeTestServer
) -> Subscriber:
    return await subscriber(persist_ca, session, challsrv)


async def validated_authz(client: Subscriber, name: str, kind: str) -> str:
    reply = await client.new_order(name)
    authz_url: str = reply.body["authorizations"][0]
    await client.answer(authz_url, kind)
    assert (await client.wait_authz(authz_url))["status"] == "valid"
    return authz_url


@pytest.mark.parametrize(
    ("kind", "after", "reused"),
    [
        ("dns-persist-01", timedelta(minutes=1), False),
        ("dns-persist-01", timedelta(days=9), False),
        ("http-01", timedelta(days=10), True),
    ],
    ids=["persist-1min", "persist-9d", "http-01-10d"],
)
async def test_persist_2_new_orders_do_not_reuse_persist_authorizations(
    client: Subscriber, clock: FixedClock, kind: str, after: timedelta, reused: bool
) -> None:
    """The draft caps reuse at the record's TTL (seconds to minutes, known only to the
    resolver): a new order validates again, as in Boulder (ra.NOT_REUSED_BY_NEW_ORDERS); the
    record still being there, that is one lookup.  An http-01 authorization of 10 days is
    reused (the control)."""
    name = f"{kind}-{after.days}.reuse.example.com"
    first = await validated_authz(client, name, kind)
    clock.advance(after)
    second = await client.new_order(name)
    assert (second.body["authorizations"] == [first]) is reused
    assert second.body["status"] == ("ready" if reused else "pending")
    if not reused:  # the same persistent record validates the new authorization at once
        (authz_url,) = second.body["authorizations"]
        await client.answer(authz_url, kind)
        assert (await client.wait_authz(authz_url))["status"] == "valid"


async def test_persist_2_authorization_expires_with_the_cap(
    client: Subscriber, persist_ca: RunningCa
) -> None:
    authz = (
        await client.get(await validated_authz(client, "exp.example.com", "dns-persist-01"))
    ).body
    assert authz["expires"] == (START + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_persist_2_reuse_query_applies_a_method_cap_whatever_the_stored_expiry(
    client: Subscriber, persist_ca: RunningCa, dsn: str
) -> None:
    """db/orders.reusable_authorization's per-method bound holds on its own: with dns-persist-01
    allowed at order time again (the BR cap alone, 10 days), an authorization validated 11
    days ago is still not reused though its row says it expires later."""
    first = await validated_authz(client, "row.example.com", "dns-persist-01")
    authz_id = int(first.rsplit("/", 1)[1])
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "UPDATE authorizations SET expires_at = $2 WHERE id = $1",
            authz_id,
            START + timedelta(days=30),
        )
        account_id = await conn.fetchval(
            "SELECT account_id FROM authorizations WHERE id = $1", authz_id
        )
    finally:
        await conn.close()
    # The RA's query itself (db/), on its own pool: the front end holds only read views.
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        repo = OrderRepository(pool)
        for days, expected in ((9, authz_id), (11, None)):
            now = START + timedelta(days=days)
            found = await repo.reusable_authorization(
                account_id,
                "row.example.com",
                False,
                now=now,
                valid_not_before=now - timedelta(days=30),
                min_remaining=timedelta(minutes=5),
                method_not_before={"dns-persist-01": now - max_dcv_reuse(now, "dns-persist-01")},
            )
            assert found == expected, days
    finally:
        await pool.close()
