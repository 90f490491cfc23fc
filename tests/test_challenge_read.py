"""A challenge and its authorization are read in one round trip (issue 20): the challenge
taken from its authorization's challenge array equals the one decoded from its own row."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from acme_ca.db.authorizations import challenge_from_row
from acme_ca.db.orders import OrderRepository
from tests.fixtures import RunningCa
from tests.support.jws import JwsClient


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_get_challenge_in_one_round_trip_equals_the_row(
    ca: RunningCa, session: aiohttp.ClientSession, pool: asyncpg.Pool
) -> None:
    client = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    await client.load_directory()
    assert (await client.register()).status == 201
    reply = await client.post(
        client.directory["newOrder"], {"identifiers": [{"type": "dns", "value": "a.example.com"}]}
    )
    assert reply.status == 201, reply.body
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM challenges ORDER BY id")]
    assert len(ids) >= 2
    # One challenge with every optional column set, as a finished validation leaves it.
    await pool.execute(
        """UPDATE challenges SET status = 'invalid', validated_at = $2, attempts = 2,
                  error = $3, validation_records = $4 WHERE id = $1""",
        ids[0],
        datetime(2026, 12, 3, 19, 0, 0, 123456, tzinfo=UTC),
        {"type": "urn:ietf:params:acme:error:connection", "detail": "refused", "status": 400},
        [{"url": "http://a.example.com/", "addressUsed": "192.0.2.1", "ok": False}],
    )
    orders = OrderRepository(pool)
    for challenge_id in ids:
        found = await orders.get_challenge(challenge_id)
        assert found is not None
        challenge, authz = found
        row = await pool.fetchrow("SELECT * FROM challenges WHERE id = $1", challenge_id)
        assert challenge == challenge_from_row(row)
        assert challenge.authz_id == authz.id and challenge in authz.challenges
    assert await orders.get_challenge(ids[-1] + 1000) is None
