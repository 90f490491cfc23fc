"""dns-persist-01 and dns-account-01 through the ACME API (issue 14): offered only when
``challenge_types`` lists them, for wildcards too (their BR Wildcard column), validated by
the records a client publishes, and stored with the method's label and BR section."""

from __future__ import annotations

import os

import aiohttp
import asyncpg
import pytest

from acme_ca.db.migrate import apply_schema
from acme_ca.embedded_pg import EmbeddedPostgres
from acme_ca.testsrv.server import ChallengeTestServer
from tests.fixtures import CaFactory
from tests.support.migrations import create_schema_before
from tests.support.orders import Subscriber, subscriber, validation_config

ALL = ["http-01", "dns-01", "tls-alpn-01", "dns-persist-01", "dns-account-01"]


@pytest.fixture
async def every_method(
    ca_factory: CaFactory, challsrv: ChallengeTestServer, session: aiohttp.ClientSession
) -> Subscriber:
    ca = await ca_factory.start(challenge_types=ALL, **validation_config(challsrv))
    return await subscriber(ca, session, challsrv)


async def test_acct_1_account_bound_methods_are_opt_in(sub: Subscriber) -> None:
    """The default configuration offers neither (dns-account-01: few clients speak it)."""
    authz = (
        await sub.get((await sub.new_order("optin.example.com")).body["authorizations"][0])
    ).body
    offered = {c["type"] for c in authz["challenges"]}
    assert not offered & {"dns-persist-01", "dns-account-01"}, offered


async def test_adn_3_wildcards_get_only_the_dns_methods(every_method: Subscriber) -> None:
    order = (await every_method.new_order("*.wild.example.com")).body
    authz = (await every_method.get(order["authorizations"][0])).body
    assert [c["type"] for c in authz["challenges"]] == [
        "dns-01",
        "dns-persist-01",
        "dns-account-01",
    ]


@pytest.mark.parametrize(
    ("kind", "section"),
    [("dns-persist-01", "3.2.2.4.22"), ("dns-account-01", "3.2.2.4.21")],
)
async def test_acct_1_validated_through_the_api_and_recorded(
    every_method: Subscriber, kind: str, section: str
) -> None:
    name = f"{kind}.api.example.com"
    order = (await every_method.new_order(name)).body
    authz_url = order["authorizations"][0]
    await every_method.answer(authz_url, kind)
    authz = await every_method.wait_authz(authz_url)
    assert authz["status"] == "valid", authz
    (challenge,) = authz["challenges"]
    assert challenge["type"] == kind
    decided = [r for r in challenge["validationRecord"] if r.get("result") == "pass"]
    assert decided and all(
        (r["method"], r["brMethod"], r["adn"]) == (kind, section, name) for r in decided
    )


TYPE_CHECK = (
    "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'challenges_type_check'"
)


async def test_migration_007_widens_the_challenge_types(
    postgres: EmbeddedPostgres, dsn: str
) -> None:
    """A database from before 007 refuses the new types; after it, its constraint is the fresh
    schema's (schema.sql), and replaying changes nothing."""
    fresh = await asyncpg.connect(dsn)
    try:
        wanted = await fresh.fetchval(TYPE_CHECK)
    finally:
        await fresh.close()
    assert "dns-persist-01" in wanted and "dns-account-01" in wanted and "tls-alpn-01" in wanted
    conn = await asyncpg.connect(postgres.create_database(f"m_{os.urandom(8).hex()}"))
    try:
        await create_schema_before(conn, 7)
        assert "dns-persist-01" not in await conn.fetchval(TYPE_CHECK)
        assert 7 in await apply_schema(conn)
        assert await conn.fetchval(TYPE_CHECK) == wanted
        assert await apply_schema(conn) == [], "replaying the schema changes nothing"
    finally:
        await conn.close()
